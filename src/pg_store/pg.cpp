// SPDX-License-Identifier: Apache-2.0
// libpq behind RAII: connect with timeouts and keepalives, run statements, map errors.
#include "pg.hpp"

#include <libpq-fe.h>

#include <charconv>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <quartzflow/log.hpp>

namespace quartzflow::detail {
namespace {

std::string shortened(std::string_view sql) {
  constexpr std::size_t k_max = 120;
  return std::string(sql.substr(0, k_max)) + (sql.size() > k_max ? "..." : "");
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

/// SQLSTATEs that mean the server went away or refuses work for now: class 08 (connection
/// exception), 57P01-57P03 (admin shutdown, crash shutdown, cannot connect now).
bool is_unavailable(std::string_view state) {
  return state.starts_with("08") || state == "57P01" || state == "57P02" || state == "57P03";
}

/// The column of `Key (a, b)=(x, y) already exists.`: the last one named.
std::string conflicting_column(std::string_view detail) {
  const auto open = detail.find("Key (");
  const auto close = detail.find(")=", open);
  if (open == std::string_view::npos || close == std::string_view::npos) return {};
  auto columns = detail.substr(open + 5, close - open - 5);
  if (const auto comma = columns.rfind(", "); comma != std::string_view::npos) columns.remove_prefix(comma + 2);
  return std::string(columns);
}

}  // namespace

std::string redact_dsn(std::string_view dsn) {
  std::string out(dsn);
  // URI: scheme://user:password@host...
  if (const auto scheme = out.find("://"); scheme != std::string::npos) {
    const auto authority = scheme + 3;
    const auto at = out.find('@', authority);
    const auto slash = out.find('/', authority);
    if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
      const auto colon = out.find(':', authority);
      if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
    }
  }
  // key=value: password=secret, password = 'se cret', and ?password=... in a URI query.
  for (std::size_t from = 0;;) {
    const auto key = out.find("password", from);
    if (key == std::string::npos) break;
    auto at = key + 8;
    while (at < out.size() && out[at] == ' ') ++at;
    if (at >= out.size() || out[at] != '=' || (key > 0 && std::isalnum(static_cast<unsigned char>(out[key - 1])))) {
      from = key + 8;
      continue;
    }
    ++at;
    while (at < out.size() && out[at] == ' ') ++at;
    auto end = at;
    if (end < out.size() && out[end] == '\'') {
      for (++end; end < out.size() && out[end] != '\''; ++end)
        if (out[end] == '\\') ++end;
      if (end < out.size()) ++end;
    } else {
      while (end < out.size() && out[end] != ' ' && out[end] != '&') ++end;
    }
    out.replace(at, end - at, "***");
    from = at + 3;
  }
  return out;
}

PgResult::~PgResult() {
  if (result_) PQclear(result_);
}

PgResult::PgResult(PgResult&& other) noexcept : result_(std::exchange(other.result_, nullptr)) {}

PgResult& PgResult::operator=(PgResult&& other) noexcept {
  if (this != &other) {
    if (result_) PQclear(result_);
    result_ = std::exchange(other.result_, nullptr);
  }
  return *this;
}

int PgResult::rows() const noexcept { return result_ ? PQntuples(result_) : 0; }

bool PgResult::is_null(int row, int column) const noexcept { return PQgetisnull(result_, row, column) != 0; }

std::string_view PgResult::text(int row, int column) const noexcept {
  return {PQgetvalue(result_, row, column), static_cast<std::size_t>(PQgetlength(result_, row, column))};
}

bool PgResult::is_bytea(int column) const noexcept {
  constexpr Oid k_bytea_oid = 17;
  return PQftype(result_, column) == k_bytea_oid;
}

std::int64_t PgResult::changes() const noexcept {
  const std::string_view tuples = result_ ? PQcmdTuples(result_) : "";
  std::int64_t n = 0;
  std::from_chars(tuples.data(), tuples.data() + tuples.size(), n);
  return n;
}

std::string_view PgResult::command() const noexcept { return result_ ? PQcmdStatus(result_) : ""; }

PgConnection::~PgConnection() {
  if (conn_) PQfinish(conn_);
}

PgConnection::PgConnection(PgConnection&& other) noexcept : conn_(std::exchange(other.conn_, nullptr)) {}

PgConnection& PgConnection::operator=(PgConnection&& other) noexcept {
  if (this != &other) {
    if (conn_) PQfinish(conn_);
    conn_ = std::exchange(other.conn_, nullptr);
  }
  return *this;
}

PgConnection PgConnection::connect(const PgConnectOptions& options, error_code& ec, std::string* detail) {
  const auto connect_seconds = std::to_string(
      std::max<std::int64_t>(2, std::chrono::ceil<std::chrono::seconds>(options.connect_timeout).count()));
  // Our defaults first: with expand_dbname, the DSN's own values (given after) win. A
  // password given apart comes last. Keepalives make a silent peer (a partition) an error
  // within about a minute instead of a read that never returns.
  std::vector<const char*> keys{"connect_timeout",  "keepalives",       "keepalives_idle", "keepalives_interval",
                                "keepalives_count", "application_name", "dbname"};
  std::vector<const char*> values{connect_seconds.c_str(), "1", "30", "10", "3", "quartzflow", options.dsn.c_str()};
  if (!options.password.empty()) {
    keys.push_back("password");
    values.push_back(options.password.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  PgConnection connection(PQconnectdbParams(keys.data(), values.data(), 1));
  const auto fail = [&](error_code code, std::string why) {
    ec = code;
    if (detail) *detail = fmt::format("PostgreSQL ({}): {}", redact_dsn(options.dsn), why);
    return PgConnection();
  };
  if (!connection.conn_) return fail(errc::store_failed, "out of memory");
  if (PQstatus(connection.conn_) != CONNECTION_OK)
    return fail(errc::store_unavailable, trimmed(PQerrorMessage(connection.conn_)));
  // NOTICEs (`... already exists, skipping` of a migration) go to the log, not to stderr.
  PQsetNoticeProcessor(
      connection.conn_, [](void*, const char* message) { logger()->debug("store: PostgreSQL: {}", trimmed(message)); },
      nullptr);
  if (PQsetClientEncoding(connection.conn_, "UTF8") != 0)
    return fail(errc::store_failed, trimmed(PQerrorMessage(connection.conn_)));
  std::string setup = fmt::format("SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}",
                                  options.statement_timeout.count(), options.idle_in_transaction_timeout.count());
  if (!options.schema.empty()) {
    char* quoted = PQescapeIdentifier(connection.conn_, options.schema.c_str(), options.schema.size());
    if (!quoted) return fail(errc::invalid_argument, "schema: cannot be quoted");
    setup += fmt::format("; SET search_path TO {}", quoted);
    PQfreemem(quoted);
  }
  std::string why;
  if (!connection.exec(setup, ec, &why)) return fail(ec, why);
  ec = {};
  return connection;
}

bool PgConnection::connected() const noexcept { return conn_ && PQstatus(conn_) == CONNECTION_OK; }

bool PgConnection::in_failed_transaction() const noexcept {
  return conn_ && PQtransactionStatus(conn_) == PQTRANS_INERROR;
}

bool PgConnection::in_transaction() const noexcept {
  const auto status = conn_ ? PQtransactionStatus(conn_) : PQTRANS_UNKNOWN;
  return status == PQTRANS_INTRANS || status == PQTRANS_INERROR;
}

error_code PgConnection::failure(const pg_result* result, std::string_view what, std::string& message) const {
  const char* state = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  const std::string_view sqlstate = state ? state : "";
  message = trimmed(result && *PQresultErrorMessage(result) ? PQresultErrorMessage(result) : PQerrorMessage(conn_));
  const bool lost = !connected() || is_unavailable(sqlstate);
  logger()->log(lost ? spdlog::level::warn : spdlog::level::err, "store: PostgreSQL error {} ({}) in: {}",
                sqlstate.empty() ? "-" : sqlstate, message, shortened(what));
  if (lost) return errc::store_unavailable;
  if (sqlstate == "23505") return errc::conflict;
  return errc::store_failed;
}

void PgConnection::throw_failure(const pg_result* result, std::string_view what) const {
  std::string message;
  const auto ec = failure(result, what, message);
  if (ec == errc::conflict) {
    const char* detail = PQresultErrorField(result, PG_DIAG_MESSAGE_DETAIL);
    throw error(ec, ValidationError{"store", conflicting_column(detail ? detail : ""), message});
  }
  throw error(ec, fmt::format("store: {} ({})", message, shortened(what)));
}

bool PgConnection::exec(const std::string& sql, error_code& ec, std::string* detail) {
  PgResult result(PQexec(conn_, sql.c_str()));
  const auto status = result.get() ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return true;
  std::string message;
  ec = failure(result.get(), sql, message);
  if (detail) *detail = std::move(message);
  return false;
}

PgResult PgConnection::exec(const std::string& sql) {
  PgResult result(PQexec(conn_, sql.c_str()));
  const auto status = result.get() ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) throw_failure(result.get(), sql);
  return result;
}

void PgConnection::prepare(const std::string& name, const std::string& sql) {
  PgResult result(PQprepare(conn_, name.c_str(), sql.c_str(), 0, nullptr));
  if (!result.get() || PQresultStatus(result.get()) != PGRES_COMMAND_OK) throw_failure(result.get(), sql);
}

PgResult PgConnection::exec_prepared(const std::string& name, std::string_view sql, int count,
                                     const char* const* values, const int* lengths, const int* formats) {
  PgResult result(PQexecPrepared(conn_, name.c_str(), count, values, lengths, formats, 0));
  const auto status = result.get() ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) throw_failure(result.get(), sql);
  return result;
}

}  // namespace quartzflow::detail
