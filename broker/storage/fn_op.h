#pragma once
// A WriteOp made of two functions, for the small admin operations (topics, groups) whose
// data fits in a capture. `apply` runs on the writer thread and must capture only values
// it owns; `complete` runs on the loop thread.

#include <functional>

#include "broker/storage/writer.h"

namespace txmq::broker::storage {

class FnOp final : public WriteOp {
 public:
  FnOp(std::function<Status(WriteTxn&)> apply, std::function<void(const Status&)> complete)
      : apply_(std::move(apply)), complete_(std::move(complete)) {}
  Status apply(WriteTxn& txn) override { return apply_(txn); }
  void complete(const Status& status) override { complete_(status); }

 private:
  std::function<Status(WriteTxn&)> apply_;
  std::function<void(const Status&)> complete_;
};

}  // namespace txmq::broker::storage
