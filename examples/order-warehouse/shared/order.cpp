#include "order.h"

#include "flat_json.h"

namespace orders_example {

std::string to_json(const Order& o) {
  return JsonWriter()
      .field("order_id", o.order_id)
      .field("customer", o.customer)
      .field("sku", o.sku)
      .field("quantity", o.quantity)
      .field("amount_cents", o.amount_cents)
      .str();
}

std::optional<Order> order_from_json(std::string_view json) {
  auto f = parse_flat_json(json);
  if (!f) return std::nullopt;
  auto qty = json_int(*f, "quantity");
  auto amount = json_int(*f, "amount_cents");
  if (!f->count("order_id") || !f->count("customer") || !f->count("sku") || !qty || !amount) return std::nullopt;
  return Order{f->at("order_id"), f->at("customer"), f->at("sku"), *qty, *amount};
}

std::string to_json(const Cancellation& c) {
  return JsonWriter().field("order_id", c.order_id).field("reason", c.reason).str();
}

std::optional<Cancellation> cancellation_from_json(std::string_view json) {
  auto f = parse_flat_json(json);
  if (!f || !f->count("order_id")) return std::nullopt;
  return Cancellation{f->at("order_id"), f->count("reason") ? f->at("reason") : ""};
}

}  // namespace orders_example
