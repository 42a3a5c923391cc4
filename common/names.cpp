#include "common/names.h"

#include <cctype>

namespace txmq::common {

bool valid_name(std::string_view name) {
  // "." and ".." would read as paths wherever a name becomes one (a tool's output file, a
  // future file per topic); 249 keeps every storage key well under LMDB's 511 bytes.
  if (name.empty() || name.size() > 249 || name == "." || name == "..") return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) return false;
  return true;
}

}  // namespace txmq::common
