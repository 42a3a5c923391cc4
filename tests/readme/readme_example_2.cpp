// Compiles the README's second C++ example ("Transactional messages"), taken from
// README.md at build time by extract_examples.py. Only what the example leaves to the
// reader is defined here.
#include <cstdint>
#include <string>

#include "txmq/client.h"

namespace readme_2 {
struct OrdersDb {
  bool has_order_for(const std::string&) const { return true; }
  bool insert(const std::string&, const std::string&) { return true; }
};
}  // namespace readme_2

void readme_example_2(readme_2::OrdersDb& orders_db, const std::string& order_id, const std::string& json) {
  using namespace txmq::client;
#include "readme_example_2.inc"
}
