// Compiles the README's third C++ example ("Transactional messages", at rate), taken from
// README.md at build time by extract_examples.py. Only what the example leaves to the
// reader is defined here.
#include <cstdint>
#include <iostream>
#include <string>

#include "txmq/client.h"

namespace readme_3 {
struct OrdersDb {
  bool has_order_for(const std::string&) const { return true; }
  bool insert(const std::string&, const std::string&) { return true; }
};
}  // namespace readme_3

void readme_example_3(readme_3::OrdersDb& orders_db, const std::string& order_id, const std::string& json) {
  using namespace txmq::client;
#include "readme_example_3.inc"
}
