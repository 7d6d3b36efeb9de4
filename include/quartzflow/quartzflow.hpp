// SPDX-License-Identifier: Apache-2.0
// Umbrella header: everything libquartzflow offers.
#pragma once

#include <quartzflow/cron.hpp>
#include <quartzflow/error.hpp>
#include <quartzflow/log.hpp>
#include <quartzflow/schedule.hpp>
#include <quartzflow/time.hpp>
#include <quartzflow/version.hpp>
