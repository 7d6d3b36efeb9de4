// SPDX-License-Identifier: Apache-2.0
// PostgreSQL statements behind the store's SqlStatement: parameters as text (blobs as binary
// bytea), results in text (bytea decoded from hex), prepared once per connection.
#include "pg_session.hpp"

#include <charconv>
#include <vector>

#include <fmt/format.h>

namespace quartzflow::detail {
namespace {

// As for SQLite: list queries differ by their filters; the cache is emptied between
// transactions once it holds more than this.
constexpr std::size_t k_max_cached_statements = 256;

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/// bytea's text output (`\x` and hex pairs, the default bytea_output) as bytes.
std::string decode_bytea(std::string_view text) {
  if (!text.starts_with("\\x"))
    throw error(errc::store_failed, "store: a bytea value is not in hex format (set bytea_output = 'hex')");
  text.remove_prefix(2);
  std::string out(text.size() / 2, '\0');
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int high = hex_value(text[2 * i]), low = hex_value(text[2 * i + 1]);
    if (high < 0 || low < 0) throw error(errc::store_failed, "store: a bytea value is not valid hex");
    out[i] = static_cast<char>(high * 16 + low);
  }
  return out;
}

class PgSessionStatement final : public SqlStatement {
 public:
  PgSessionStatement(PgConnection& connection, std::string name, std::string sql, int parameters)
      : connection_(connection),
        name_(std::move(name)),
        sql_(std::move(sql)),
        values_(static_cast<std::size_t>(parameters)),
        present_(static_cast<std::size_t>(parameters), false),
        formats_(static_cast<std::size_t>(parameters), 0) {}

  void reset() noexcept override {
    result_ = PgResult();
    row_ = -1;
    ran_ = false;
    std::fill(present_.begin(), present_.end(), false);
    std::fill(formats_.begin(), formats_.end(), 0);
    blobs_.clear();
  }
  void bind(int index, std::int64_t value) override { set(index, std::to_string(value), 0); }
  void bind(int index, std::string_view text) override { set(index, std::string(text), 0); }
  void bind_blob(int index, std::string_view bytes) override { set(index, std::string(bytes), 1); }
  void bind_null(int index) override {
    if (index >= 1 && static_cast<std::size_t>(index) <= present_.size())
      present_[static_cast<std::size_t>(index - 1)] = false;
  }
  bool next() override {
    if (!ran_) {
      run();
      ran_ = true;
    }
    blobs_.clear();
    return ++row_ < result_.rows();
  }
  std::int64_t changes() const override { return result_.changes(); }
  bool is_null(int column) const override { return result_.is_null(row_, column); }
  std::int64_t int64(int column) const override {
    const auto text = result_.text(row_, column);
    std::int64_t value = 0;
    // SUM() of integers is numeric in PostgreSQL: its text is an integer all the same.
    std::from_chars(text.data(), text.data() + text.size(), value);
    return value;
  }
  std::string text(int column) const override { return std::string(result_.text(row_, column)); }
  std::string_view blob(int column) const override {
    if (!result_.is_bytea(column)) return result_.text(row_, column);
    auto& decoded = blobs_[column];
    if (!decoded) decoded = decode_bytea(result_.text(row_, column));
    return *decoded;
  }

 private:
  void set(int index, std::string value, int format) {
    if (index < 1 || static_cast<std::size_t>(index) > values_.size())
      throw error(errc::store_failed,
                  fmt::format("store: parameter {} out of range in: {}", index, sql_.substr(0, 120)));
    const auto i = static_cast<std::size_t>(index - 1);
    values_[i] = std::move(value);
    present_[i] = true;
    formats_[i] = format;
  }

  void run() {
    std::vector<const char*> values(values_.size());
    std::vector<int> lengths(values_.size());
    for (std::size_t i = 0; i < values_.size(); ++i) {
      values[i] = present_[i] ? values_[i].data() : nullptr;
      lengths[i] = static_cast<int>(values_[i].size());
    }
    result_ = connection_.exec_prepared(name_, sql_, static_cast<int>(values.size()), values.data(), lengths.data(),
                                        formats_.data());
  }

  PgConnection& connection_;
  std::string name_;
  std::string sql_;
  std::vector<std::string> values_;
  std::vector<bool> present_;
  std::vector<int> formats_;
  PgResult result_;
  int row_ = -1;
  bool ran_ = false;
  mutable std::map<int, std::optional<std::string>> blobs_;  // decoded bytea of the current row
};

}  // namespace

std::string numbered_placeholders(std::string_view sql, int& count) {
  std::string out;
  out.reserve(sql.size() + 16);
  count = 0;
  int next_bare = 0;
  bool in_literal = false;
  for (std::size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (c == '\'') in_literal = !in_literal;
    if (c != '?' || in_literal) {
      out += c;
      continue;
    }
    std::size_t end = i + 1;
    while (end < sql.size() && sql[end] >= '0' && sql[end] <= '9') ++end;
    int number = ++next_bare;
    if (end > i + 1) {
      std::from_chars(sql.data() + i + 1, sql.data() + end, number);
      next_bare = number;
    }
    out += '$';
    out += std::to_string(number);
    count = std::max(count, number);
    i = end - 1;
  }
  return out;
}

bool PgSession::connect(error_code& ec, std::string* detail) {
  drop_statements();
  connection_ = PgConnection::connect(options_, ec, detail);
  return !ec;
}

const SqlDialect& PgSession::dialect() const noexcept {
  // The lease's clock is the server's (clock_timestamp(): not the transaction's start), and
  // its row is locked: FOR UPDATE to decide a takeover, FOR SHARE in a fencing check.
  static constexpr SqlDialect k_postgres{
      .nulls_sort_high = true,
      .now_unix_ms_sql = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
      .lock_for_update = " FOR UPDATE",
      .lock_for_share = " FOR SHARE",
      .serialize_config_versions_sql = "SELECT pg_advisory_xact_lock(7163021)",
      .execution_changes_by_trigger = true};
  return k_postgres;
}

SqlStatement& PgSession::statement(std::string_view sql) {
  auto found = statements_.find(sql);
  if (found == statements_.end()) {
    int parameters = 0;
    auto numbered = numbered_placeholders(sql, parameters);
    auto name = fmt::format("qf{}", ++next_name_);
    connection_.prepare(name, numbered);
    found = statements_
                .emplace(std::string(sql), std::make_unique<PgSessionStatement>(connection_, std::move(name),
                                                                                std::move(numbered), parameters))
                .first;
  }
  return *found->second;
}

void PgSession::trim_statement_cache() {
  if (statements_.size() <= k_max_cached_statements) return;
  error_code ignored;
  if (connection_.connected()) connection_.exec("DEALLOCATE ALL", ignored);
  drop_statements();
}

void PgSession::drop_statements() {
  statements_.clear();
  ++generation_;
}

}  // namespace quartzflow::detail
