// produce_consume BROKER TOPIC: creates the topic, sends one message and receives it back in a
// consumer group, acking it; exits 0 once the ack is durable. What a user's first program
// does with an installed libtxmq, nothing more.
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <string>

#include <txmq/client.h>

using namespace txmq::client;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: produce_consume HOST:PORT TOPIC\n";
    return 2;
  }
  const std::string broker = argv[1];
  const std::string topic_name = argv[2];
  const std::string body = "hello from an installed txmq";

  Admin admin({.broker = broker});
  if (auto topic = admin.create_topic(topic_name, 1, Millis(10000)); !topic) {
    std::cerr << "create_topic: " << topic.error().describe() << "\n";
    return 1;
  }

  Producer::Options po;
  po.broker = broker;
  Producer producer(po);
  if (auto receipt = producer.send(topic_name, Message{.body = body}, Millis(10000)); !receipt) {
    std::cerr << "send: " << receipt.error().describe() << "\n";
    return 1;
  }

  std::mutex mu;
  std::condition_variable cv;
  std::string received;
  Consumer::Options co;
  co.broker = broker;
  co.topic = topic_name;
  co.group = "installed-test";
  Consumer* self = nullptr;
  Consumer consumer(co, [&](const Delivery& d) {  // on the consumer's I/O thread
    self->ack(d);
    std::lock_guard lock(mu);
    received = d.body;
    cv.notify_all();
  });
  self = &consumer;

  std::unique_lock lock(mu);
  if (!cv.wait_for(lock, std::chrono::seconds(20), [&] { return !received.empty(); })) {
    std::cerr << "no delivery within 20 s\n";
    return 1;
  }
  lock.unlock();
  if (received != body) {
    std::cerr << "received '" << received << "', sent '" << body << "'\n";
    return 1;
  }
  if (auto st = consumer.flush_acks(Millis(10000)); !st) {
    std::cerr << "flush_acks: " << st.error().describe() << "\n";
    return 1;
  }
  std::cout << "consumed: " << received << "\n";
  return 0;
}
