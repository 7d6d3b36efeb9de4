/* SPDX-License-Identifier: Apache-2.0 */
/* An example shared-object plugin: greets `params.name` (or config `greeting`), fails when
 * the param `fail` is "yes". Build: cc -shared -fPIC -I include hello_plugin.c -o hello.so */
#include <stdio.h>
#include <string.h>

#include <quartzflow/plugin_abi.h>

static const char* find(const qf_plugin_kv* items, size_t count, const char* key) {
  for (size_t i = 0; i < count; ++i)
    if (strcmp(items[i].key, key) == 0) return items[i].value;
  return NULL;
}

static int run(const qf_plugin_call* call, const qf_plugin_sink* output, const qf_plugin_sink* error) {
  const char* fail = find(call->params, call->param_count, "fail");
  if (fail != NULL && strcmp(fail, "yes") == 0) {
    static const char message[] = "asked to fail";
    error->write(error->context, message, sizeof message - 1);
    return 1;
  }
  const char* greeting = find(call->config, call->config_count, "greeting");
  const char* name = find(call->params, call->param_count, "name");
  char line[256];
  int n = snprintf(line, sizeof line, "%s, %s! (execution %s, attempt %u)\n", greeting ? greeting : "Hello",
                   name ? name : "world", call->execution_id, (unsigned)call->attempt);
  if (n > 0) output->write(output->context, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
  return 0;
}

static const qf_plugin plugin = {QF_PLUGIN_ABI_VERSION, "hello", run};

const qf_plugin* qf_plugin_entry(void) { return &plugin; }
