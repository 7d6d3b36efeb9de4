// SPDX-License-Identifier: Apache-2.0
// Fuzzes the YAML loader: arbitrary text is read as a task manifest file (load_task_manifest:
// yaml-cpp, protobuf reflection, the repeated-field bound, task validation) and as agent and
// coordinator configuration (yaml_to_message). A failure says where and why and leaves the
// output unchanged; an accepted manifest holds only tasks that validate.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <quartzflow/task.hpp>
#include <quartzflow/yaml_config.hpp>

namespace qf = quartzflow;

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "invariant broken: %s\n", what);
  std::abort();
}

// load_task_manifest reads a file: an in-memory one, rewritten for each input.
const std::string& manifest_path(std::string_view text) {
  static const int fd = memfd_create("qf-fuzz-manifest", 0);
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (fd < 0 || ftruncate(fd, 0) != 0 || pwrite(fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()))
    fail("cannot write the in-memory manifest");
  return path;
}

template <typename Message>
void check_config(std::string_view text) {
  Message message;
  message.set_data_dir("unchanged");
  const std::string before = message.SerializeAsString();
  qf::YamlError error;
  if (!qf::yaml_to_message(text, "fuzz.yaml", message, error)) {
    if (error.reason.empty() || error.message().empty()) fail("a config error without a reason");
    if (message.SerializeAsString() != before) fail("a refused config changed the output");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 64 * 1024) return -1;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  qf::v1::TaskManifest manifest;
  manifest.add_tasks()->set_name("sentinel");
  qf::YamlError error;
  if (qf::load_task_manifest(manifest_path(text), manifest, error)) {
    for (const qf::v1::Task& task : manifest.tasks()) {
      if (task.id().empty()) fail("an accepted task without an id");
      if (qf::validate_task(task)) fail("an accepted manifest holds a task that does not validate");
    }
    qf::v1::TaskManifest again;
    if (!again.ParseFromString(manifest.SerializeAsString())) fail("an accepted manifest does not re-serialise");
  } else {
    if (error.reason.empty() || error.message().empty()) fail("a manifest error without a reason");
    if (manifest.tasks_size() != 1 || manifest.tasks(0).name() != "sentinel") fail("a refused manifest changed the output");
  }

  check_config<qf::v1::AgentConfig>(text);
  check_config<qf::v1::CoordinatorConfig>(text);
  return 0;
}
