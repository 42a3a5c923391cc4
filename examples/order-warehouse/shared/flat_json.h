#pragma once
// The little JSON the example needs: one flat object per message (an order, a cancellation)
// and reading the top-level fields of the notifier's give-up record.
//
// Not a general JSON library (the example takes no dependency for it): the writer emits
// one object of string and integer fields; the reader returns each top-level field of an
// object as text — strings unescaped, numbers and literals as written, nested objects and
// arrays as their raw JSON text.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace orders_example {

class JsonWriter {
 public:
  JsonWriter& field(std::string_view name, std::string_view value);
  JsonWriter& field(std::string_view name, std::int64_t value);
  std::string str() const { return "{" + out_ + "}"; }

 private:
  void name(std::string_view n);
  std::string out_;
};

// The top-level fields of a JSON object; nullopt when text is not one.
std::optional<std::map<std::string, std::string>> parse_flat_json(std::string_view text);

// A field as an integer; nullopt when missing or not a number.
std::optional<std::int64_t> json_int(const std::map<std::string, std::string>& fields, const std::string& name);

}  // namespace orders_example
