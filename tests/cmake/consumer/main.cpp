// SPDX-License-Identifier: Apache-2.0
// Uses the installed headers, the library and the generated schema.
#include <iostream>

#include <quartzflow/quartzflow.hpp>
#include <quartzflow/v1/task.pb.h>

int main() {
  namespace qf = quartzflow;
  const auto expr = qf::CronExpr::parse("0 2 * * *");
  const auto next = expr.next(*qf::parse_rfc3339("2026-01-01T00:00:00Z"));
  quartzflow::v1::Task task;
  task.set_name("consumer");
  std::cout << "next fire " << qf::format_rfc3339(*next) << " for " << task.name() << "\n";
  return 0;
}
