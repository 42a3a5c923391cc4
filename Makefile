# Shortcuts for people who have make; the README's commands are the scripts themselves.
.PHONY: run cluster test bench clean
run:
	scripts/run-broker.sh
cluster:
	scripts/run-cluster.sh
test:
	scripts/test.sh
bench:
	cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DTXMQ_BUILD_TESTS=OFF
	cmake --build build/release -j $$(nproc)
	build/release/bench/txmq-bench --broker-bin build/release/broker/txmq-broker
clean:
	rm -rf build
