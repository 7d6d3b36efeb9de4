// SPDX-License-Identifier: Apache-2.0
// Loads shared-object plugins (include/quartzflow/plugin_abi.h) into a PluginExecutor.
#include <filesystem>

#include <dlfcn.h>
#include <fmt/format.h>

#include <quartzflow/executor.hpp>
#include <quartzflow/log.hpp>
#include <quartzflow/plugin_abi.h>

namespace quartzflow {
namespace {

void append(void* context, const char* data, std::size_t size) {
  if (data != nullptr && size > 0) static_cast<std::string*>(context)->append(data, size);
}

std::vector<qf_plugin_kv> key_values(const google::protobuf::Map<std::string, std::string>& map) {
  std::vector<qf_plugin_kv> out;
  for (const auto& [k, v] : map) out.push_back({k.c_str(), v.c_str()});
  return out;
}

}  // namespace

std::size_t load_plugins(PluginExecutor& executor, const std::string& directory, std::vector<std::string>& errors) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(directory, ec)) {
    errors.push_back(fmt::format("{}: not a directory", directory));
    return 0;
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(directory, ec))
    if (entry.path().extension() == ".so") files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  std::size_t loaded = 0;
  for (const auto& file : files) {
    // Kept loaded for the life of the process: tasks may run its code at any time.
    void* library = ::dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) {
      errors.push_back(fmt::format("{}: {}", file.string(), ::dlerror()));
      continue;
    }
    auto entry = reinterpret_cast<qf_plugin_entry_fn>(::dlsym(library, QF_PLUGIN_ENTRY_SYMBOL));
    const qf_plugin* plugin = entry ? entry() : nullptr;
    if (plugin == nullptr || plugin->run == nullptr || plugin->name == nullptr || *plugin->name == '\0') {
      errors.push_back(fmt::format("{}: no usable {} symbol", file.string(), QF_PLUGIN_ENTRY_SYMBOL));
      ::dlclose(library);
      continue;
    }
    if (plugin->abi_version != QF_PLUGIN_ABI_VERSION) {
      errors.push_back(fmt::format("{}: plugin ABI version {}, this agent speaks {}", file.string(),
                                   plugin->abi_version, QF_PLUGIN_ABI_VERSION));
      ::dlclose(library);
      continue;
    }
    executor.add(plugin->name, [plugin](const PluginCall& call) {
      const auto& request = *call.request;
      std::vector<std::pair<std::string, std::string>> params(request.params.begin(), request.params.end());
      std::vector<qf_plugin_kv> param_items;
      for (const auto& [k, v] : params) param_items.push_back({k.c_str(), v.c_str()});
      const auto config_items = key_values(call.spec->config());
      const std::int64_t scheduled_ms = request.scheduled.time_since_epoch().count() * 1000;
      const qf_plugin_call c{QF_PLUGIN_ABI_VERSION,
                             request.task->id().c_str(),
                             request.execution_id.c_str(),
                             scheduled_ms,
                             request.attempt,
                             param_items.data(),
                             param_items.size(),
                             config_items.data(),
                             config_items.size(),
                             call.spec->config_json().c_str()};
      PluginResult result;
      std::string error_text;
      const qf_plugin_sink output{&result.output, append};
      const qf_plugin_sink error{&error_text, append};
      const int status = plugin->run(&c, &output, &error);
      result.success = status == 0;
      result.error_message = result.success ? std::move(error_text)
                                            : (error_text.empty() ? fmt::format("plugin returned {}", status) : error_text);
      return result;
    });
    logger()->info("loaded plugin \"{}\" from {}", plugin->name, file.string());
    ++loaded;
  }
  return loaded;
}

}  // namespace quartzflow
