// SPDX-License-Identifier: Apache-2.0
// Both sides of the agent protocol, for existing includes. A host that runs one side
// includes its own header: <quartzflow/agent_dispatcher.hpp> (an agent: the engine and its
// local store) or <quartzflow/coordinator_dispatcher.hpp> (the coordinator's Store and Scheduler).
#pragma once

#include <quartzflow/agent_dispatcher.hpp>
#include <quartzflow/coordinator_dispatcher.hpp>
