#pragma once
// The order as it travels: the body of a message on the `orders` topic (JSON, so that the
// notifier can hand it to the points service as it is), keyed by the order id.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace orders_example {

struct Order {
  std::string order_id;      // chosen by the customer ("o-000042"): the idempotency key of placing it
  std::string customer;      // "c-17"
  std::string sku;           // what is bought
  std::int64_t quantity = 0;
  std::int64_t amount_cents = 0;  // paid at checkout; points are amount_cents / 100
};

std::string to_json(const Order& order);
// nullopt when the text is not an order (a field missing or of the wrong type).
std::optional<Order> order_from_json(std::string_view json);

// A compensation request on the `order-cancellations` topic.
struct Cancellation {
  std::string order_id;
  std::string reason;
};

std::string to_json(const Cancellation& c);
std::optional<Cancellation> cancellation_from_json(std::string_view json);

// Topic and group names the three services agree on.
inline constexpr std::string_view kOrdersTopic = "orders";
inline constexpr std::string_view kCancellationsTopic = "order-cancellations";
inline constexpr std::string_view kOrderProducerGroup = "order-service";
inline constexpr std::string_view kWarehouseGroup = "warehouse";  // its dead letters: warehouse.dlq

}  // namespace orders_example
