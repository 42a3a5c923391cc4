#include "broker/names.h"

#include <string>

#include "common/well_known.h"

namespace txmq::broker {

Status check_client_write(std::string_view topic,
                          const flatbuffers::Vector<flatbuffers::Offset<wire::Message>>* messages) {
  // Redrive moves a dead letter back by what its headers say; a letter a client wrote
  // could name any acknowledged message and have it delivered again.
  if (is_dead_letter_topic(topic))
    return Error(ErrorCode::kForbidden,
                 "topic '" + std::string(topic) + "' is a dead-letter topic; only the broker writes it");
  if (!messages) return {};
  for (const auto* m : *messages) {
    if (!m->headers()) continue;
    for (const auto* h : *m->headers())
      if (h->name() && is_reserved_header(h->name()->string_view()))
        return Error(ErrorCode::kForbidden, "header '" + h->name()->str() + "' is reserved: headers starting with '" +
                                                kReservedHeaderPrefix + "' are set by the broker only");
  }
  return {};
}

Status check_client_create(std::string_view topic) {
  if (is_dead_letter_topic(topic))
    return Error(ErrorCode::kForbidden, "topic '" + std::string(topic) +
                                            "' is a dead-letter topic; only the broker creates it (on the group's "
                                            "first dead letter) and writes it");
  return {};
}

}  // namespace txmq::broker
