/* SPDX-License-Identifier: Apache-2.0 */
/* The stable C ABI of shared-object plugins. A plugin is a .so in a plugin directory that
 * exports `qf_plugin_entry`; tasks name it in `plugin.name`. C only, so any compiler (and any
 * language with a C FFI) can build one. Change = new QF_PLUGIN_ABI_VERSION, never in place. */
#ifndef QUARTZFLOW_PLUGIN_ABI_H
#define QUARTZFLOW_PLUGIN_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QF_PLUGIN_ABI_VERSION 1u

/** A key and a value, both NUL-terminated UTF-8; valid for the duration of the call. */
typedef struct qf_plugin_kv {
  const char* key;
  const char* value;
} qf_plugin_kv;

/** What one run gives the plugin. Everything is owned by the agent and valid during `run`. */
typedef struct qf_plugin_call {
  uint32_t abi_version;        /* QF_PLUGIN_ABI_VERSION of the agent */
  const char* task_id;
  const char* execution_id;
  int64_t scheduled_unix_ms;   /* the nominal fire time */
  uint32_t attempt;            /* 1 for the first attempt */
  const qf_plugin_kv* params;  /* dynamic params of the run */
  size_t param_count;
  const qf_plugin_kv* config;  /* the task's plugin.config map */
  size_t config_count;
  const char* config_json;     /* the task's plugin.config_json ("" when unset) */
} qf_plugin_call;

/** Appends output (stdout-like) or, on the error sink, the failure message. */
typedef struct qf_plugin_sink {
  void* context;
  void (*write)(void* context, const char* data, size_t size);
} qf_plugin_sink;

/** A plugin: its name and its entry point. `run` returns 0 for success, anything else for
 * failure. It runs on the agent's event loop thread: keep it short. */
typedef struct qf_plugin {
  uint32_t abi_version; /* must be QF_PLUGIN_ABI_VERSION */
  const char* name;     /* what tasks write in plugin.name */
  int (*run)(const qf_plugin_call* call, const qf_plugin_sink* output, const qf_plugin_sink* error);
} qf_plugin;

/** The one symbol a plugin exports. The returned object lives as long as the library. */
typedef const qf_plugin* (*qf_plugin_entry_fn)(void);
#define QF_PLUGIN_ENTRY_SYMBOL "qf_plugin_entry"

#ifdef __cplusplus
}
#endif

#endif /* QUARTZFLOW_PLUGIN_ABI_H */
