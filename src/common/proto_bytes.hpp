// SPDX-License-Identifier: Apache-2.0
// Protobuf messages as the stores keep them.
#pragma once

#include <string>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/message_lite.h>

namespace quartzflow::detail {

/// Stable bytes (map fields in key order; they serialize in arbitrary order otherwise), so that
/// "unchanged" can be decided by comparing stored bytes.
inline std::string serialize_deterministic(const google::protobuf::MessageLite& message) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream raw(&out);
    google::protobuf::io::CodedOutputStream coded(&raw);
    coded.SetSerializationDeterministic(true);
    message.SerializeToCodedStream(&coded);
  }
  return out;
}

}  // namespace quartzflow::detail
