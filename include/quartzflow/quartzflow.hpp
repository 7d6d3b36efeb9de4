// SPDX-License-Identifier: Apache-2.0
// Umbrella header: every public header of libquartzflow (plugin_abi.h, the C ABI that
// plugin libraries implement, stands apart). Include only what you use to compile faster.
#pragma once

#include <quartzflow/admin.hpp>
#include <quartzflow/agent_dispatcher.hpp>
#include <quartzflow/async.hpp>
#include <quartzflow/auth.hpp>
#include <quartzflow/catalog.hpp>
#include <quartzflow/certs.hpp>
#include <quartzflow/coordinator.hpp>
#include <quartzflow/coordinator_dispatcher.hpp>
#include <quartzflow/cron.hpp>
#include <quartzflow/error.hpp>
#include <quartzflow/execution_status.hpp>
#include <quartzflow/executor.hpp>
#include <quartzflow/local_store.hpp>
#include <quartzflow/log.hpp>
#include <quartzflow/metrics.hpp>
#include <quartzflow/quic.hpp>
#include <quartzflow/routing.hpp>
#include <quartzflow/schedule.hpp>
#include <quartzflow/scheduler.hpp>
#include <quartzflow/store.hpp>
#include <quartzflow/pg_store.hpp>
#include <quartzflow/task.hpp>
#include <quartzflow/task_builder.hpp>
#include <quartzflow/task_engine.hpp>
#include <quartzflow/time.hpp>
#include <quartzflow/transport.hpp>
#include <quartzflow/version.hpp>
#include <quartzflow/yaml_config.hpp>
