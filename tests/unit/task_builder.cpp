// SPDX-License-Identifier: Apache-2.0
// TaskBuilder and the Result type: tasks in a few lines, validated with field paths.
#include <catch2/catch.hpp>

#include <quartzflow/task.hpp>
#include <quartzflow/task_builder.hpp>

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
using namespace std::chrono_literals;

TEST_CASE("A builder makes the same task as the hand-made message", "[task]") {
  const auto built = qf::TaskBuilder("backup")
                         .cron("0 3 * * *")
                         .time_zone("Europe/Paris")
                         .shell({"/usr/local/bin/backup", "--full"})
                         .timeout(30min)
                         .retry(2, 60s)
                         .on_one_agent(v1::ROUTING_STRATEGY_LEAST_BUSY)
                         .group("db")
                         .param("target", "s3")
                         .label("team", "storage")
                         .build();

  v1::Task expected;
  expected.set_id("backup");
  expected.set_name("backup");
  expected.set_enabled(true);
  expected.mutable_schedule()->set_cron("0 3 * * *");
  expected.mutable_schedule()->set_time_zone("Europe/Paris");
  expected.mutable_shell()->add_argv("/usr/local/bin/backup");
  expected.mutable_shell()->add_argv("--full");
  expected.set_timeout_seconds(1800);
  expected.mutable_retry()->set_max_retries(2);
  expected.mutable_retry()->set_interval_seconds(60);
  expected.mutable_placement()->set_mode(v1::PLACEMENT_MODE_ONE);
  expected.mutable_placement()->set_routing(v1::ROUTING_STRATEGY_LEAST_BUSY);
  expected.add_group_ids("db");
  auto* param = expected.add_params();
  param->set_name("target");
  param->set_default_value("s3");
  (*expected.mutable_labels())["team"] = "storage";
  CHECK(built.SerializeAsString() == expected.SerializeAsString());
  CHECK_FALSE(qf::validate_task(built));
}

TEST_CASE("A builder takes a ScheduleSpec or the short text form, keeping the zone", "[task]") {
  auto spec = qf::ScheduleSpec::from_text("@every 90s");
  spec.time_zone = "Asia/Tokyo";
  spec.jitter = 5s;
  const auto from_spec = qf::TaskBuilder("sync").schedule(spec).plugin("sync").build();
  const auto back = qf::schedule_spec_from_proto(from_spec.schedule());
  CHECK(back.kind == qf::ScheduleKind::interval);
  CHECK(back.period == 90s);
  CHECK(back.time_zone == "Asia/Tokyo");
  CHECK(back.jitter == 5s);

  const auto from_text = qf::TaskBuilder("sync").time_zone("Asia/Tokyo").schedule("@delay 5m").plugin("sync").build();
  CHECK(from_text.schedule().fixed_delay_seconds() == 300);
  CHECK(from_text.schedule().time_zone() == "Asia/Tokyo");
  CHECK(qf::TaskBuilder("off").every(10s).plugin("p").enabled(false).build().enabled() == false);
}

TEST_CASE("A builder reports the first problem with its field, without or with exceptions", "[task]") {
  qf::error_code ec;
  qf::ValidationError detail;
  CHECK_FALSE(qf::TaskBuilder("bad").schedule("@every soon").plugin("p").build(ec, &detail));
  CHECK(ec == qf::errc::invalid_argument);
  CHECK(detail.field == "schedule");
  CHECK(detail.reason.find("duration") != std::string::npos);

  try {
    (void)qf::TaskBuilder("late").cron("0 25 * * *").plugin("p").build();
    FAIL("an hour of 25 was accepted");
  } catch (const qf::error& e) {
    CHECK(e.code() == qf::errc::invalid_argument);
    CHECK(e.detail().field.rfind("schedule", 0) == 0);
    CHECK(std::string(e.what()).find("25") != std::string::npos);
  }

  detail = {};
  CHECK_FALSE(qf::TaskBuilder("nobody").every(10s).build(ec, &detail));
  CHECK_FALSE(detail.field.empty());
}

TEST_CASE("A Result is true on success and throws its field and reason on demand", "[task]") {
  qf::Result<int> good;
  good.value = 7;
  CHECK(good);
  CHECK(good.value_or_throw() == 7);
  CHECK(good.message().empty());

  qf::Result<int> bad{.ec = qf::errc::invalid_argument, .error = {"task", "name", "is empty"}};
  CHECK_FALSE(bad);
  CHECK(bad.message() == bad.error.message());
  CHECK_THROWS_MATCHES(bad.value_or_throw(), qf::error,
                       Catch::Matchers::Predicate<qf::error>([](const qf::error& e) { return e.detail().field == "name"; }));

  qf::Result<int> missing;
  missing.ec = qf::errc::not_found;
  CHECK(missing.message() == qf::error_code(qf::errc::not_found).message());
  CHECK_THROWS_AS(std::move(missing).value_or_throw(), qf::error);
}
