// SPDX-License-Identifier: Apache-2.0
// qfctl: the QuartzFlow command line. Invalid input (and requests the admin API refuses) exits
// with status 2, server and connection failures with 1, the error on stderr.
#include <iostream>

#include <quartzflow/version.hpp>

#include "commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"qfctl: control and inspect QuartzFlow"};
  app.name("qfctl");
  app.require_subcommand(1);
  app.set_version_flag("--version", quartzflow::version);
  qfctl::add_cron_commands(app);
  qfctl::add_local_commands(app);
  qfctl::add_certs_commands(app);
  qfctl::add_auth_commands(app);
  qfctl::add_task_commands(app);
  qfctl::add_catalog_commands(app);
  qfctl::add_history_commands(app);
  qfctl::add_alert_commands(app);
  qfctl::add_admin_commands(app);
  qfctl::add_import_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "qfctl: " << e.what() << "\n";
    std::cerr << "Run with --help for more information.\n";
    return qfctl::k_exit_invalid_input;
  } catch (const qfctl::CommandFailure& failure) {
    std::cerr << "qfctl: " << failure.message << "\n";
    return failure.status;
  }
  return 0;
}
