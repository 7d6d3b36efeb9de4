// SPDX-License-Identifier: Apache-2.0
// The PostgreSQL Store: the writer thread group-commits queued transactions (each in its own
// savepoint) on one connection, the reader thread runs each read in a REPEATABLE READ,
// READ ONLY transaction on another; a lost connection fails its batch and is made again
// for the next one.
#include <cstdlib>
#include <fstream>

#include <fmt/format.h>

#include <quartzflow/log.hpp>
#include <quartzflow/pg_store.hpp>

#include "../store/sql_transaction.hpp"
#include "../store/store_worker.hpp"
#include "pg_schema.hpp"
#include "pg_session.hpp"

namespace quartzflow {
namespace {

using detail::PgConnectOptions;
using detail::PgSession;
using detail::SqlStoreTransaction;
using detail::StoreJob;

class PostgresStore final : public detail::BatchingStore {
 public:
  PostgresStore(boost::asio::any_io_executor executor, PostgresStoreOptions options)
      : BatchingStore(std::move(executor)), options_(std::move(options)) {}

  ~PostgresStore() override { stop_lanes(); }  // drains both queues: everything queued runs and completes

  bool open(error_code& ec, std::string* detail) {
    PgConnectOptions connect;
    connect.dsn = options_.dsn;
    connect.connect_timeout = options_.connect_timeout;
    connect.statement_timeout = options_.statement_timeout;
    connect.idle_in_transaction_timeout = options_.idle_in_transaction_timeout;
    connect.schema = options_.schema;
    if (!options_.password_file.empty()) {
      std::ifstream file(options_.password_file);
      if (!file || !std::getline(file, connect.password)) {
        ec = errc::invalid_argument;
        if (detail) *detail = fmt::format("password_file: cannot read {}", options_.password_file);
        return false;
      }
      if (!connect.password.empty() && connect.password.back() == '\r') connect.password.pop_back();
    } else if (const char* password = std::getenv("QF_PG_PASSWORD")) {
      connect.password = password;
    }
    write_ = std::make_unique<PgSession>(connect);
    read_ = std::make_unique<PgSession>(connect);
    if (!write_->connect(ec, detail)) return false;
    std::string why;
    if (!detail::migrate_postgres_store(write_->connection(), options_.schema, ec, &why)) {
      if (detail) *detail = fmt::format("PostgreSQL ({}): {}", detail::redact_dsn(options_.dsn), why);
      return false;
    }
    if (!read_->connect(ec, detail)) return false;
    write_tx_ = std::make_unique<SqlStoreTransaction>(*write_, true);
    read_tx_ = std::make_unique<SqlStoreTransaction>(*read_, false);
    start_lanes(options_.max_batch_delay, options_.max_batch_duration);
    return true;
  }

 private:
  /// Connects `session` again when its connection is known to be gone.
  bool ensure_connected(PgSession& session, error_code& ec) {
    if (session.connection().connected()) return true;
    std::string why;
    if (session.connect(ec, &why)) {
      logger()->info("store: reconnected to PostgreSQL");
      return true;
    }
    logger()->warn("store: cannot reconnect: {}", why);
    return false;
  }

  /// BEGIN on the writer, connecting again once when the connection turns out to be gone
  /// (nothing of the batch ran yet, so trying again is safe).
  bool begin(error_code& ec) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      ec = {};
      if (!ensure_connected(*write_, ec)) return false;
      if (write_->connection().exec("BEGIN", ec)) return true;
      if (write_->connection().connected()) return false;
    }
    return false;
  }

  std::size_t write_batch(std::span<StoreJob> batch, std::vector<error_code>& results, error_code& batch_ec,
                          std::chrono::steady_clock::time_point deadline) override {
    auto& connection = write_->connection();
    if (!begin(batch_ec)) return batch.size();
    write_tx_->trim_statement_cache();
    // Each statement is a round trip to the server, the cost that bounds this store: a batch
    // of one needs no savepoint (its failure rolls the transaction back), and a savepoint is
    // released in the message that opens the next one (the last by COMMIT).
    bool rolled_back = false;
    std::size_t ran = 0;
    if (batch.size() == 1) {
      results[0] = run_alone(batch[0]);
      ran = 1;
      if (results[0] && !batch_ec) rolled_back = connection.exec("ROLLBACK", batch_ec);
    } else {
      bool savepoint_open = false;
      for (; ran < batch.size() && !batch_ec; ++ran) {
        // Past the deadline the rest waits for the next batch: urgent work (the lease
        // renewal) never waits for more than one bounded batch.
        if (ran > 0 && std::chrono::steady_clock::now() >= deadline) break;
        results[ran] = run_in_savepoint(batch[ran], savepoint_open, batch_ec);
      }
    }
    if (!batch_ec && !rolled_back) {
      // COMMIT of a transaction an error left aborted answers ROLLBACK, not an error.
      try {
        if (connection.exec("COMMIT").command() != "COMMIT") batch_ec = errc::store_failed;
      } catch (const error& e) {
        batch_ec = e.code();
      }
    }
    if (batch_ec && connection.connected() && connection.in_transaction()) {
      error_code ignored;
      connection.exec("ROLLBACK", ignored);
    }
    return ran;
  }

  /// The only job of its batch, straight in the batch's transaction; the caller rolls it
  /// back when the job fails (a lost connection fails that ROLLBACK: the batch's error).
  error_code run_alone(StoreJob& job) {
    auto ec = detail::run_store_work(job, *write_tx_);
    // A statement failed but the work went on without an error: its transaction is aborted.
    if (!ec && write_->connection().in_failed_transaction()) ec = errc::store_failed;
    return ec;
  }

  /// One job of a batch in a savepoint of its own; `savepoint_open`: the previous job's
  /// savepoint is still to be released (one round trip with this one's SAVEPOINT).
  error_code run_in_savepoint(StoreJob& job, bool& savepoint_open, error_code& batch_ec) {
    auto& connection = write_->connection();
    if (!connection.exec(savepoint_open ? "RELEASE SAVEPOINT work; SAVEPOINT work" : "SAVEPOINT work", batch_ec))
      return batch_ec;
    savepoint_open = true;
    auto ec = detail::run_store_work(job, *write_tx_);
    // A statement failed but the work went on without an error: its transaction is aborted.
    if (!ec && connection.in_failed_transaction()) ec = errc::store_failed;
    if (ec) connection.exec("ROLLBACK TO SAVEPOINT work", batch_ec);
    return ec;
  }

  error_code read_one(StoreJob& job) override {
    error_code ec;
    if (!ensure_connected(*read_, ec)) return ec;
    auto& connection = read_->connection();
    read_tx_->trim_statement_cache();
    if (!connection.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", ec)) {
      if (connection.connected()) return ec;
      // Lost since the last read: connect again once.
      if (!ensure_connected(*read_, ec) || !connection.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", ec))
        return ec;
    }
    ec = detail::run_store_work(job, *read_tx_);
    if (!ec && connection.in_failed_transaction()) ec = errc::store_failed;
    error_code end_ec;
    if (connection.connected()) connection.exec(ec ? "ROLLBACK" : "COMMIT", end_ec);
    return ec;
  }

  PostgresStoreOptions options_;
  // Sessions before the transactions that use them.
  std::unique_ptr<PgSession> write_;
  std::unique_ptr<PgSession> read_;
  std::unique_ptr<SqlStoreTransaction> write_tx_;
  std::unique_ptr<SqlStoreTransaction> read_tx_;
};

}  // namespace

std::unique_ptr<Store> open_postgres_store(boost::asio::any_io_executor executor, PostgresStoreOptions options,
                                           error_code& ec, std::string* detail) {
  auto store = std::make_unique<PostgresStore>(std::move(executor), std::move(options));
  if (!store->open(ec, detail)) return nullptr;
  ec = {};
  return store;
}

}  // namespace quartzflow
