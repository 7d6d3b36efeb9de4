// SPDX-License-Identifier: Apache-2.0
// Admin API: alert rules, channels, silences and heartbeat monitors (CRUD), alerts (list,
// acknowledge) and the delivery outbox (list), straight over the Store. Every input is
// checked as a whole (each bad field named, nothing written), secrets are sealed before they
// are stored and redacted in every answer, and every change is audited in its transaction.
#include <algorithm>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <quartzflow/catalog.hpp>
#include <quartzflow/cron.hpp>
#include <quartzflow/v1/alerts_api.pb.h>

#include "../alerts/secrets.hpp"
#include "../auth/auth_detail.hpp"
#include "../common/clock.hpp"
#include "../common/label_selector.hpp"  // parse_label_selector: the store's own reading of selectors
#include "admin_api.hpp"

namespace quartzflow::detail {
namespace {

using CallPtr = std::shared_ptr<ApiCall>;
using Message = google::protobuf::Message;

constexpr int k_viewer = 1;
constexpr int k_operator = 2;
constexpr std::size_t k_max_text = 1000;
constexpr int k_max_ids = 100;

/// Collects every violation of one input, then fails as a whole.
class Violations {
 public:
  explicit Violations(std::string what) : what_(std::move(what)) {}
  void add(std::string field, std::string reason) { failure_.add_violation(std::move(field), std::move(reason)); }
  bool empty() const noexcept { return failure_.violations.empty(); }
  /// Throws ApiException (INVALID_ARGUMENT) naming every violation, when there is one.
  void throw_if_any() {
    if (empty()) return;
    std::vector<std::string> parts;
    for (const auto& v : failure_.violations) parts.push_back(v.field() + ": " + v.reason());
    failure_.code = v1::API_ERROR_CODE_INVALID_ARGUMENT;
    failure_.message = fmt::format("invalid {}: {}", what_, fmt::join(parts, "; "));
    throw ApiException{failure_};
  }

 private:
  std::string what_;
  ApiFailure failure_{v1::API_ERROR_CODE_INVALID_ARGUMENT, {}, {}};
};

[[noreturn]] void throw_not_found(std::string_view what, std::string_view id) {
  throw ApiException{{v1::API_ERROR_CODE_NOT_FOUND, fmt::format("no {} with id \"{}\"", what, id), {}}};
}

/// Ids of rules, channels and monitors: 1-64 characters from [A-Za-z0-9._-].
void check_object_id(Violations& v, const std::string& field, const std::string& id) {
  if (id.empty()) return v.add(field, "is required");
  if (id.size() > 64) return v.add(field, fmt::format("has {} characters; at most 64", id.size()));
  const bool ok = std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
  if (!ok) v.add(field, fmt::format("\"{}\": use only letters, digits, '.', '_' and '-'", id));
}

/// The body's id must be empty or the path's; the path's is used.
template <typename T>
void take_path_id(T& object, const std::string& path_id, Violations& v) {
  if (!object.id().empty() && object.id() != path_id)
    v.add("id", fmt::format("\"{}\" differs from the id in the path (\"{}\")", object.id(), path_id));
  object.set_id(path_id);
}

void check_text(Violations& v, const std::string& field, const std::string& text) {
  if (text.size() > k_max_text) v.add(field, fmt::format("has {} bytes; at most {}", text.size(), k_max_text));
}

void check_language(Violations& v, const std::string& field, const std::string& language) {
  if (!language.empty() && language != "en" && language != "zh")
    v.add(field, fmt::format("\"{}\" is not a language of the messages: en or zh", language));
}

/// A list of ids: at most k_max_ids, none empty, none twice; each known to `exists` (when
/// given), else named with `what`.
template <typename Exists>
void check_ids(Violations& v, const google::protobuf::RepeatedPtrField<std::string>& ids, const std::string& field,
               std::string_view what, Exists exists) {
  if (ids.size() > k_max_ids) return v.add(field, fmt::format("at most {} ids; {} given", k_max_ids, ids.size()));
  std::set<std::string_view> seen;
  for (int i = 0; i < ids.size(); ++i) {
    const auto path = fmt::format("{}[{}]", field, i);
    if (ids[i].empty()) v.add(path, "is empty");
    else if (!seen.insert(ids[i]).second) v.add(path, fmt::format("\"{}\" is given twice", ids[i]));
    else if (!exists(ids[i])) v.add(path, fmt::format("no {} with id \"{}\"", what, ids[i]));
  }
}

constexpr auto any_id = [](const std::string&) { return true; };

/// `http://` or `https://` with a host; the reason it is not, or empty.
std::string url_problem(const std::string& url) {
  std::string_view rest = url;
  if (rest.rfind("https://", 0) == 0) rest.remove_prefix(8);
  else if (rest.rfind("http://", 0) == 0) rest.remove_prefix(7);
  else return fmt::format("\"{}\": the scheme must be http:// or https://", url);
  const auto host = rest.substr(0, rest.find_first_of("/?#"));
  if (host.empty()) return fmt::format("\"{}\": has no host", url);
  if (url.find_first_of(" \t\r\n") != std::string::npos) return fmt::format("\"{}\": contains white space", url);
  return {};
}

/// An e-mail address as SMTP takes it: `local@domain`, no spaces or angle brackets.
bool plausible_address(const std::string& address) {
  const auto at = address.find('@');
  return at != std::string::npos && at > 0 && at + 1 < address.size() &&
         address.find('@', at + 1) == std::string::npos && address.find_first_of(" \t\r\n<>,;") == std::string::npos;
}

void check_secret(Violations& v, const std::string& field, const v1::Secret& secret, bool have_key) {
  const int given = (secret.value().empty() ? 0 : 1) + (secret.file().empty() ? 0 : 1) + (secret.env().empty() ? 0 : 1);
  if (given > 1) v.add(field, "give one of value, file and env");
  if (!secret.value().empty() && !have_key)
    v.add(field + ".value",
          "inline secrets need the coordinator's secret key (alerts.secret_key_file); use file or env");
  if (!secret.file().empty() && secret.file().front() != '/')
    v.add(field + ".file", fmt::format("\"{}\" is not an absolute path", secret.file()));
  if (!secret.env().empty()) {
    const auto& name = secret.env();
    const bool ok = !(name.front() >= '0' && name.front() <= '9') && std::all_of(name.begin(), name.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    });
    if (!ok) v.add(field + ".env", fmt::format("\"{}\" is not an environment variable name", name));
  }
}

bool secret_given(const v1::Secret& secret) {
  return !secret.value().empty() || !secret.file().empty() || !secret.env().empty();
}

/// Given now, or kept sealed from the stored channel.
bool secret_present(const v1::Secret& secret) { return secret_given(secret) || !secret.sealed().empty(); }

/// Seals a secret given now; one kept from the store is sealed already.
void prepare_secret(v1::Secret& secret, std::string_view key) {
  if (secret.sealed().empty()) seal_for_store(secret, key);
}

// ---- rules ----

void validate_rule(const v1::AlertRule& rule, StoreTransaction& tx) {
  Violations v("alert rule");
  check_object_id(v, "id", rule.id());
  check_text(v, "description", rule.description());
  if (rule.condition() == v1::ALERT_CONDITION_UNSPECIFIED)
    v.add("condition",
          "is required: RUN_FAILED, RUN_MISSED, CONSECUTIVE_FAILURES, DURATION_ABOVE, "
          "NO_SUCCESS_WITHIN, AGENT_OFFLINE, CONFIG_PUSH_FAILED or MONITOR_DOWN");
  switch (rule.condition()) {
    case v1::ALERT_CONDITION_CONSECUTIVE_FAILURES:
      if (rule.consecutive_failures() == 1 || rule.consecutive_failures() > 1000)
        v.add("consecutive_failures", fmt::format("{} is out of range 2-1000 (0 = 3)", rule.consecutive_failures()));
      break;
    case v1::ALERT_CONDITION_DURATION_ABOVE:
      if (rule.duration_above_seconds() == 0 && rule.duration_p95_factor() == 0)
        v.add("duration_above_seconds", "give duration_above_seconds or duration_p95_factor");
      if (rule.duration_p95_factor() < 0 || rule.duration_p95_factor() > 1000 ||
          (rule.duration_p95_factor() > 0 && rule.duration_p95_factor() <= 1))
        v.add("duration_p95_factor",
              fmt::format("{} is out of range: above 1, at most 1000", rule.duration_p95_factor()));
      break;
    case v1::ALERT_CONDITION_NO_SUCCESS_WITHIN:
      if (rule.no_success_within_seconds() < 60)
        v.add("no_success_within_seconds", rule.no_success_within_seconds() == 0
                                               ? "is required for NO_SUCCESS_WITHIN"
                                               : fmt::format("{} is below 60", rule.no_success_within_seconds()));
      break;
    default: break;
  }
  if (rule.scope().task_label_selector().size() > 0) {
    try {
      parse_label_selector(rule.scope().task_label_selector(), "alert rule");
    } catch (const error& e) {
      v.add("scope.task_label_selector", e.detail().reason.empty() ? e.what() : e.detail().reason);
    }
  }
  check_ids(v, rule.scope().task_ids(), "scope.task_ids", "task", any_id);
  check_ids(v, rule.scope().group_ids(), "scope.group_ids", "group", any_id);
  check_ids(v, rule.scope().agent_ids(), "scope.agent_ids", "agent", any_id);
  check_ids(v, rule.scope().monitor_ids(), "scope.monitor_ids", "monitor",
            [&tx](const std::string& id) { return tx.monitor(id).has_value(); });
  const auto channel_exists = [&tx](const std::string& id) { return tx.channel(id).has_value(); };
  if (rule.channel_ids_size() == 0) v.add("channel_ids", "give at least one channel");
  check_ids(v, rule.channel_ids(), "channel_ids", "channel", channel_exists);
  std::uint32_t previous = 0;
  for (int i = 0; i < rule.escalation_size(); ++i) {
    const auto& step = rule.escalation(i);
    const auto path = fmt::format("escalation[{}]", i);
    if (step.after_seconds() == 0) v.add(path + ".after_seconds", "is required (> 0)");
    else if (step.after_seconds() <= previous)
      v.add(path + ".after_seconds",
            fmt::format("{} does not increase: the step before waits {}", step.after_seconds(), previous));
    previous = std::max(previous, step.after_seconds());
    if (step.channel_ids_size() == 0) v.add(path + ".channel_ids", "give at least one channel");
    check_ids(v, step.channel_ids(), path + ".channel_ids", "channel", channel_exists);
  }
  if (rule.group_wait_seconds() > 3600)
    v.add("group_wait_seconds", fmt::format("{} is out of range 0-3600", rule.group_wait_seconds()));
  if (rule.group_interval_seconds() > 86400)
    v.add("group_interval_seconds", fmt::format("{} is out of range 0-86400", rule.group_interval_seconds()));
  if (rule.repeat_interval_seconds() != 0 &&
      (rule.repeat_interval_seconds() < 60 || rule.repeat_interval_seconds() > 30 * 86400))
    v.add("repeat_interval_seconds", fmt::format("{} is out of range 60-2592000", rule.repeat_interval_seconds()));
  check_language(v, "language", rule.language());
  v.throw_if_any();
}

// ---- channels ----

void validate_channel(const v1::Channel& channel, bool have_key) {
  Violations v("channel");
  check_object_id(v, "id", channel.id());
  check_text(v, "description", channel.description());
  const auto type = channel.type();
  if (type == v1::CHANNEL_TYPE_UNSPECIFIED)
    v.add("type", "is required: WEBHOOK, EMAIL, SLACK, DINGTALK, WECOM, FEISHU or PAGERDUTY");
  const bool email = type == v1::CHANNEL_TYPE_EMAIL;
  if (email) {
    if (!channel.url().empty()) v.add("url", "is not used by EMAIL channels (set email.smtp_host)");
  } else if (channel.url().empty()) {
    if (type != v1::CHANNEL_TYPE_PAGERDUTY && type != v1::CHANNEL_TYPE_UNSPECIFIED)
      v.add("url", fmt::format("is required for {} channels", v1::ChannelType_Name(type).substr(13)));
  } else if (auto why = url_problem(channel.url()); !why.empty()) {
    v.add("url", why);
  }
  if (email) {
    const auto& e = channel.email();
    if (e.smtp_host().empty()) v.add("email.smtp_host", "is required for EMAIL channels");
    if (e.smtp_port() > 65535) v.add("email.smtp_port", fmt::format("{} is out of range 1-65535", e.smtp_port()));
    if (e.from().empty()) v.add("email.from", "is required for EMAIL channels");
    else if (!plausible_address(e.from()))
      v.add("email.from", fmt::format("\"{}\" is not an e-mail address", e.from()));
    if (e.to_size() == 0) v.add("email.to", "give at least one recipient");
    for (int i = 0; i < e.to_size(); ++i)
      if (!plausible_address(e.to(i)))
        v.add(fmt::format("email.to[{}]", i), fmt::format("\"{}\" is not an e-mail address", e.to(i)));
    if (e.to_size() > k_max_ids) v.add("email.to", fmt::format("at most {} recipients", k_max_ids));
    if (!e.ca_file().empty() && e.ca_file().front() != '/')
      v.add("email.ca_file", fmt::format("\"{}\" is not an absolute path", e.ca_file()));
    if (e.has_password()) check_secret(v, "email.password", e.password(), have_key);
    if (e.has_password() && secret_present(e.password()) && e.username().empty())
      v.add("email.username", "is required with email.password");
  } else if (channel.has_email()) {
    v.add("email", "is for EMAIL channels only");
  }
  if (type == v1::CHANNEL_TYPE_PAGERDUTY && !secret_present(channel.secret()))
    v.add("secret", "is required for PAGERDUTY channels: the routing (integration) key");
  if (channel.has_secret()) check_secret(v, "secret", channel.secret(), have_key);
  if (channel.timeout_seconds() > 300)
    v.add("timeout_seconds", fmt::format("{} is out of range 1-300 (0 = 10)", channel.timeout_seconds()));
  if (!channel.ca_file().empty() && channel.ca_file().front() != '/')
    v.add("ca_file", fmt::format("\"{}\" is not an absolute path", channel.ca_file()));
  check_language(v, "language", channel.language());
  v.throw_if_any();
}

/// On replace, a secret the request leaves empty keeps the stored one (a client never has
/// the inline value to send back).
void keep_stored_secret(v1::Secret* given, bool given_present, const v1::Secret& stored) {
  if (!given_present || !secret_given(*given)) *given = stored;
}

// ---- silences ----

void validate_silence(const v1::Silence& silence, std::int64_t now, StoreTransaction& tx) {
  Violations v("silence");
  if (silence.rule_ids_size() + silence.task_ids_size() + silence.agent_ids_size() + silence.monitor_ids_size() == 0)
    v.add("rule_ids", "give what it mutes: rule_ids, task_ids, agent_ids or monitor_ids");
  check_ids(v, silence.rule_ids(), "rule_ids", "alert rule",
            [&tx](const std::string& id) { return tx.alert_rule(id).has_value(); });
  check_ids(v, silence.task_ids(), "task_ids", "task", any_id);
  check_ids(v, silence.agent_ids(), "agent_ids", "agent", any_id);
  check_ids(v, silence.monitor_ids(), "monitor_ids", "monitor", any_id);
  if (silence.ends_unix_ms() == 0) v.add("ends_unix_ms", "is required: when the silence ends");
  else if (silence.ends_unix_ms() <= now)
    v.add("ends_unix_ms", fmt::format("{} is in the past", silence.ends_unix_ms()));
  else if (silence.ends_unix_ms() <= silence.starts_unix_ms())
    v.add("ends_unix_ms",
          fmt::format("{} is not after starts_unix_ms ({})", silence.ends_unix_ms(), silence.starts_unix_ms()));
  if (silence.reason().empty()) v.add("reason", "is required: why notifications are muted");
  check_text(v, "reason", silence.reason());
  v.throw_if_any();
}

// ---- monitors ----

void validate_monitor(const v1::Monitor& monitor) {
  Violations v("monitor");
  check_object_id(v, "id", monitor.id());
  check_text(v, "description", monitor.description());
  if (monitor.cron().empty() && monitor.period_seconds() == 0)
    v.add("cron", "give the expected schedule: cron (with time_zone) or period_seconds");
  if (!monitor.cron().empty() && monitor.period_seconds() != 0)
    v.add("period_seconds", "give cron or period_seconds, not both");
  if (!monitor.cron().empty()) {
    CronOptions options;
    if (!monitor.time_zone().empty()) options.time_zone = monitor.time_zone();
    error_code ec;
    ValidationError detail;
    if (!CronExpr::parse(monitor.cron(), options, ec, &detail)) {
      const bool zone = detail.field.find("zone") != std::string::npos;
      v.add(zone ? "time_zone" : "cron",
            detail.reason.empty()
                ? ec.message()
                : (detail.field.empty() || zone ? detail.reason : detail.field + ": " + detail.reason));
    }
  } else if (!monitor.time_zone().empty()) {
    v.add("time_zone", "is for cron schedules only");
  }
  // Down to a second: a job that reports every few seconds (and the end-to-end tests) fits.
  if (monitor.period_seconds() > 31 * 86400)
    v.add("period_seconds", fmt::format("{} is out of range 1-2678400", monitor.period_seconds()));
  if (monitor.grace_seconds() > 7 * 86400)
    v.add("grace_seconds", fmt::format("{} is out of range 0-604800 (0 = 300)", monitor.grace_seconds()));
  v.throw_if_any();
}

/// What a stored monitor shows of its token: the last 4 characters.
std::string token_hint(const std::string& token) { return "…" + token.substr(token.size() - 4); }

template <typename Response, typename Item>
std::unique_ptr<Message> page_of(Listing<Item> listing, std::uint32_t page, std::uint32_t page_size,
                                 void (*shown)(Item&) = nullptr) {
  auto out = std::make_unique<Response>();
  for (auto& item : listing.items) {
    if (shown) shown(item);
    *out->add_items() = std::move(item);
  }
  out->set_total(listing.total);
  out->set_page(std::max<std::uint32_t>(page, 1));
  out->set_page_size(page_size == 0 ? 20 : std::min<std::uint32_t>(page_size, 500));
  return out;
}

void show_channel(v1::Channel& channel) { redact_channel(channel); }

bool query_into(ApiCall& call, Message& message) {
  if (auto failure = parse_query(call.request.query, message)) {
    call.fail(*failure);
    return false;
  }
  return true;
}

bool body_into(ApiCall& call, Message& message) {
  if (auto failure = parse_body(call.request.body, message)) {
    call.fail(*failure);
    return false;
  }
  return true;
}

}  // namespace

std::optional<ApiFailure> prepare_task_callbacks(v1::Task& task, const v1::Task* stored, std::string_view key) {
  Violations v("task");
  const bool have_key = key.size() == k_secret_key_bytes;
  if (task.callbacks_size() > 10)
    v.add("callbacks", fmt::format("at most 10 callbacks; {} given", task.callbacks_size()));
  for (int i = 0; i < task.callbacks_size(); ++i) {
    auto& callback = *task.mutable_callbacks(i);
    const auto path = fmt::format("callbacks[{}]", i);
    if (callback.url().empty()) v.add(path + ".url", "is required");
    else if (auto why = url_problem(callback.url()); !why.empty()) v.add(path + ".url", why);
    if (callback.timeout_seconds() > 300)
      v.add(path + ".timeout_seconds", fmt::format("{} is out of range 1-300 (0 = 10)", callback.timeout_seconds()));
    if (callback.max_attempts() > 100)
      v.add(path + ".max_attempts", fmt::format("{} is out of range 1-100 (0 = 10)", callback.max_attempts()));
    if (!callback.has_secret()) continue;
    callback.mutable_secret()->clear_sealed();  // the store's own: what a client sends there means nothing
    // A secret left empty keeps the stored one of the same callback (same place, same URL):
    // a client never has the inline value to send back.
    if (!secret_given(callback.secret()) && stored && i < stored->callbacks_size() &&
        stored->callbacks(i).url() == callback.url())
      *callback.mutable_secret() = stored->callbacks(i).secret();
    check_secret(v, path + ".secret", callback.secret(), have_key);
  }
  try {
    v.throw_if_any();
  } catch (const ApiException& e) {
    return e.failure;
  }
  for (auto& callback : *task.mutable_callbacks())
    if (callback.has_secret()) prepare_secret(*callback.mutable_secret(), key);
  return std::nullopt;
}

void redact_task_callbacks(v1::Task& task) {
  for (auto& callback : *task.mutable_callbacks())
    if (callback.has_secret()) redact_secret(*callback.mutable_secret());
}

void AdminApi::write_alerts(CallPtr call, std::string action, std::string target_type, std::string target_id,
                            WriteWork work) {
  auto failure = std::make_shared<std::optional<ApiFailure>>();
  auto json = std::make_shared<std::string>();
  coordinator_.store().transact(
      [call, work = std::move(work), failure, json](StoreTransaction& tx, error_code& ec) {
        try {
          if (auto result = work(tx, *call)) *json = to_json(*result);
          return;
        } catch (const ApiException& e) {
          *failure = e.failure;
        } catch (const error& e) {
          *failure = failure_of(e.code(), e.detail(), e.what());
        }
        ec = errc::invalid_argument;  // rolls the transaction back: a refused input writes nothing
      },
      [weak = weak_from_this(), call, failure, json, action = std::move(action), target_type = std::move(target_type),
       target_id = std::move(target_id)](error_code ec) {
        auto self = weak.lock();
        if (*failure) {
          if (self && (*failure)->code != v1::API_ERROR_CODE_NOT_FOUND)
            self->audit(*call, action, target_type, target_id, target_id, false, (*failure)->message);
          return call->fail(**failure);
        }
        if (ec) return call->fail(v1::API_ERROR_CODE_UNAVAILABLE, fmt::format("store unavailable: {}", ec.message()));
        if (json->empty()) return call->fail(v1::API_ERROR_CODE_INTERNAL, "the request produced no answer");
        // The leader's engine reads rules, silences, monitors and acknowledgements again now.
        if (self && self->options_.alerts.changed) self->options_.alerts.changed();
        call->ok_json(*json);
      });
}

void AdminApi::add_alert_routes() {
  const std::string key = options_.alert_secret_key;
  const bool have_key = key.size() == k_secret_key_bytes;
  const auto audit_entry = [](const ApiCall& call, std::string action, std::string type, const std::string& id,
                              const Message* before, const Message* after) {
    return make_audit_entry(call.actor, std::move(action), std::move(type), id, id, true, {}, before, after);
  };

  // --- rules ---
  add("GET", "/api/v1/alert-rules", k_viewer, v1::ListAlertObjectsRequest::descriptor(),
      v1::ListAlertRulesResponse::descriptor(), "List alert rules (by id)", [this](CallPtr call) {
        v1::ListAlertObjectsRequest request;
        if (!query_into(*call, request)) return;
        read(call, [request](StoreTransaction& tx, const ApiCall&) {
          return page_of<v1::ListAlertRulesResponse>(tx.list_alert_rules(request.page(), request.page_size()),
                                                     request.page(), request.page_size());
        });
      });
  add("GET", "/api/v1/alert-rules/{id}", k_viewer, nullptr, v1::AlertRule::descriptor(), "An alert rule",
      [this](CallPtr call) {
        read(call, [id = call->params.at("id")](StoreTransaction& tx, const ApiCall&) -> std::unique_ptr<Message> {
          auto rule = tx.alert_rule(id);
          if (!rule) throw_not_found("alert rule", id);
          return std::make_unique<v1::AlertRule>(std::move(*rule));
        });
      });
  const auto put_rule = [this, audit_entry](CallPtr call, bool create) {
    v1::AlertRule rule;
    if (!body_into(*call, rule)) return;
    const std::string target = create ? rule.id() : call->params.at("id");
    write_alerts(
        call, create ? "alert_rule.create" : "alert_rule.update", "alert_rule", target,
        [rule, create, audit_entry](StoreTransaction& tx, const ApiCall& c) mutable -> std::unique_ptr<Message> {
          Violations path("alert rule");
          if (!create) take_path_id(rule, c.params.at("id"), path);
          path.throw_if_any();
          auto before = tx.alert_rule(rule.id());
          if (create && before)
            throw ApiException{{v1::API_ERROR_CODE_ALREADY_EXISTS,
                                fmt::format("invalid alert rule: id: \"{}\" is already taken", rule.id()),
                                {field_violation("id", "is already taken")}}};
          if (!create && !before) throw_not_found("alert rule", rule.id());
          validate_rule(rule, tx);
          const auto now = now_unix_ms();
          rule.set_created_unix_ms(before ? before->created_unix_ms() : now);
          rule.set_updated_unix_ms(now);
          tx.put_alert_rule(rule);
          tx.append_audit(audit_entry(c, create ? "alert_rule.create" : "alert_rule.update", "alert_rule", rule.id(),
                                      before ? &*before : nullptr, &rule));
          return std::make_unique<v1::AlertRule>(rule);
        });
  };
  add(
      "POST", "/api/v1/alert-rules", k_operator, v1::AlertRule::descriptor(), v1::AlertRule::descriptor(),
      "Create an alert rule (its channels must exist)", [put_rule](CallPtr call) { put_rule(std::move(call), true); },
      201);
  add("PUT", "/api/v1/alert-rules/{id}", k_operator, v1::AlertRule::descriptor(), v1::AlertRule::descriptor(),
      "Replace an alert rule", [put_rule](CallPtr call) { put_rule(std::move(call), false); });
  add("DELETE", "/api/v1/alert-rules/{id}", k_operator, nullptr, nullptr,
      "Delete an alert rule (its alerts stay in the history)", [this, audit_entry](CallPtr call) {
        const std::string id = call->params.at("id");
        write_alerts(call, "alert_rule.delete", "alert_rule", id,
                     [id, audit_entry](StoreTransaction& tx, const ApiCall& c) -> std::unique_ptr<Message> {
                       auto before = tx.alert_rule(id);
                       if (!before) throw_not_found("alert rule", id);
                       tx.delete_alert_rule(id);
                       tx.append_audit(audit_entry(c, "alert_rule.delete", "alert_rule", id, &*before, nullptr));
                       return std::make_unique<v1::ApiError>();
                     });
      });

  // --- channels ---
  add("GET", "/api/v1/channels", k_viewer, v1::ListAlertObjectsRequest::descriptor(),
      v1::ListChannelsResponse::descriptor(), "List notification channels (secrets redacted)", [this](CallPtr call) {
        v1::ListAlertObjectsRequest request;
        if (!query_into(*call, request)) return;
        read(call, [request](StoreTransaction& tx, const ApiCall&) {
          return page_of<v1::ListChannelsResponse>(tx.list_channels(request.page(), request.page_size()),
                                                   request.page(), request.page_size(), &show_channel);
        });
      });
  add("GET", "/api/v1/channels/{id}", k_viewer, nullptr, v1::Channel::descriptor(),
      "A notification channel (secrets redacted)", [this](CallPtr call) {
        read(call, [id = call->params.at("id")](StoreTransaction& tx, const ApiCall&) -> std::unique_ptr<Message> {
          auto channel = tx.channel(id);
          if (!channel) throw_not_found("channel", id);
          redact_channel(*channel);
          return std::make_unique<v1::Channel>(std::move(*channel));
        });
      });
  const auto put_channel = [this, audit_entry, key, have_key](CallPtr call, bool create) {
    v1::Channel channel;
    if (!body_into(*call, channel)) return;
    const std::string target = create ? channel.id() : call->params.at("id");
    write_alerts(call, create ? "channel.create" : "channel.update", "channel", target,
                 [channel, create, audit_entry, key, have_key](StoreTransaction& tx,
                                                               const ApiCall& c) mutable -> std::unique_ptr<Message> {
                   Violations path("channel");
                   if (!create) take_path_id(channel, c.params.at("id"), path);
                   // The sealed form is the store's own: what a client sends there means nothing.
                   if (channel.has_secret()) channel.mutable_secret()->clear_sealed();
                   if (channel.email().has_password()) channel.mutable_email()->mutable_password()->clear_sealed();
                   path.throw_if_any();
                   auto before = tx.channel(channel.id());
                   if (create && before)
                     throw ApiException{{v1::API_ERROR_CODE_ALREADY_EXISTS,
                                         fmt::format("invalid channel: id: \"{}\" is already taken", channel.id()),
                                         {field_violation("id", "is already taken")}}};
                   if (!create && !before) throw_not_found("channel", channel.id());
                   if (before) {
                     if (before->has_secret())
                       keep_stored_secret(channel.mutable_secret(), channel.has_secret(), before->secret());
                     if (before->email().has_password() && channel.has_email())
                       keep_stored_secret(channel.mutable_email()->mutable_password(), channel.email().has_password(),
                                          before->email().password());
                   }
                   validate_channel(channel, have_key);
                   if (channel.has_secret()) prepare_secret(*channel.mutable_secret(), key);
                   if (channel.email().has_password())
                     prepare_secret(*channel.mutable_email()->mutable_password(), key);
                   const auto now = now_unix_ms();
                   channel.set_created_unix_ms(before ? before->created_unix_ms() : now);
                   channel.set_updated_unix_ms(now);
                   tx.put_channel(channel);
                   auto shown = channel;
                   redact_channel(shown);
                   std::optional<v1::Channel> shown_before = before;
                   if (shown_before) redact_channel(*shown_before);
                   tx.append_audit(audit_entry(c, create ? "channel.create" : "channel.update", "channel", channel.id(),
                                               shown_before ? &*shown_before : nullptr, &shown));
                   return std::make_unique<v1::Channel>(std::move(shown));
                 });
  };
  add(
      "POST", "/api/v1/channels", k_operator, v1::Channel::descriptor(), v1::Channel::descriptor(),
      "Create a notification channel (inline secrets are stored encrypted)",
      [put_channel](CallPtr call) { put_channel(std::move(call), true); }, 201);
  add("PUT", "/api/v1/channels/{id}", k_operator, v1::Channel::descriptor(), v1::Channel::descriptor(),
      "Replace a notification channel (an empty secret keeps the stored one)",
      [put_channel](CallPtr call) { put_channel(std::move(call), false); });
  add("DELETE", "/api/v1/channels/{id}", k_operator, nullptr, nullptr,
      "Delete a notification channel no alert rule uses", [this, audit_entry](CallPtr call) {
        const std::string id = call->params.at("id");
        write_alerts(call, "channel.delete", "channel", id,
                     [id, audit_entry](StoreTransaction& tx, const ApiCall& c) -> std::unique_ptr<Message> {
                       auto before = tx.channel(id);
                       if (!before) throw_not_found("channel", id);
                       std::vector<std::string> users;
                       for (const auto& rule : tx.all_alert_rules()) {
                         bool uses = std::find(rule.channel_ids().begin(), rule.channel_ids().end(), id) !=
                                     rule.channel_ids().end();
                         for (const auto& step : rule.escalation())
                           uses = uses || std::find(step.channel_ids().begin(), step.channel_ids().end(), id) !=
                                              step.channel_ids().end();
                         if (uses) users.push_back(rule.id());
                       }
                       if (!users.empty())
                         throw ApiException{{v1::API_ERROR_CODE_FAILED_PRECONDITION,
                                             fmt::format("cannot delete channel \"{}\": alert rules use it: {}", id,
                                                         fmt::join(users, ", ")),
                                             {field_violation("id", "is used by alert rules")}}};
                       tx.delete_channel(id);
                       redact_channel(*before);
                       tx.append_audit(audit_entry(c, "channel.delete", "channel", id, &*before, nullptr));
                       return std::make_unique<v1::ApiError>();
                     });
      });

  // --- silences ---
  add("GET", "/api/v1/silences", k_viewer, v1::ListSilencesRequest::descriptor(),
      v1::ListSilencesResponse::descriptor(), "List silences, latest end first (active=true: those not ended)",
      [this](CallPtr call) {
        v1::ListSilencesRequest request;
        if (!query_into(*call, request)) return;
        read(call, [request](StoreTransaction& tx, const ApiCall&) {
          return page_of<v1::ListSilencesResponse>(
              tx.list_silences(request.active() ? now_unix_ms() : 0, request.page(), request.page_size()),
              request.page(), request.page_size());
        });
      });
  add("GET", "/api/v1/silences/{id}", k_viewer, nullptr, v1::Silence::descriptor(), "A silence", [this](CallPtr call) {
    read(call, [id = call->params.at("id")](StoreTransaction& tx, const ApiCall&) -> std::unique_ptr<Message> {
      auto silence = tx.silence(id);
      if (!silence) throw_not_found("silence", id);
      return std::make_unique<v1::Silence>(std::move(*silence));
    });
  });
  const auto put_silence = [this, audit_entry](CallPtr call, bool create) {
    v1::Silence silence;
    if (!body_into(*call, silence)) return;
    if (create) silence.set_id("s-" + hex_encode(random_bytes(8)));
    const std::string target = create ? silence.id() : call->params.at("id");
    write_alerts(
        call, create ? "silence.create" : "silence.update", "silence", target,
        [silence, create, audit_entry](StoreTransaction& tx, const ApiCall& c) mutable -> std::unique_ptr<Message> {
          Violations path("silence");
          if (!create) take_path_id(silence, c.params.at("id"), path);
          path.throw_if_any();
          std::optional<v1::Silence> before;
          if (!create) before = tx.silence(silence.id());
          if (!create && !before) throw_not_found("silence", silence.id());
          const auto now = now_unix_ms();
          if (silence.starts_unix_ms() == 0) silence.set_starts_unix_ms(before ? before->starts_unix_ms() : now);
          validate_silence(silence, now, tx);
          silence.set_created_by(before ? before->created_by() : c.actor.name);
          silence.set_created_unix_ms(before ? before->created_unix_ms() : now);
          tx.put_silence(silence);
          tx.append_audit(audit_entry(c, create ? "silence.create" : "silence.update", "silence", silence.id(),
                                      before ? &*before : nullptr, &silence));
          return std::make_unique<v1::Silence>(silence);
        });
  };
  add(
      "POST", "/api/v1/silences", k_operator, v1::Silence::descriptor(), v1::Silence::descriptor(),
      "Mute notifications of matching alerts until ends_unix_ms (reason required)",
      [put_silence](CallPtr call) { put_silence(std::move(call), true); }, 201);
  add("PUT", "/api/v1/silences/{id}", k_operator, v1::Silence::descriptor(), v1::Silence::descriptor(),
      "Replace a silence (e.g. end it earlier)", [put_silence](CallPtr call) { put_silence(std::move(call), false); });
  add("DELETE", "/api/v1/silences/{id}", k_operator, nullptr, nullptr, "Delete a silence",
      [this, audit_entry](CallPtr call) {
        const std::string id = call->params.at("id");
        write_alerts(call, "silence.delete", "silence", id,
                     [id, audit_entry](StoreTransaction& tx, const ApiCall& c) -> std::unique_ptr<Message> {
                       auto before = tx.silence(id);
                       if (!before) throw_not_found("silence", id);
                       tx.delete_silence(id);
                       tx.append_audit(audit_entry(c, "silence.delete", "silence", id, &*before, nullptr));
                       return std::make_unique<v1::ApiError>();
                     });
      });

  // --- monitors ---
  add("GET", "/api/v1/monitors", k_viewer, v1::ListAlertObjectsRequest::descriptor(),
      v1::ListMonitorsResponse::descriptor(), "List heartbeat monitors (tokens as hints)", [this](CallPtr call) {
        v1::ListAlertObjectsRequest request;
        if (!query_into(*call, request)) return;
        read(call, [request](StoreTransaction& tx, const ApiCall&) {
          return page_of<v1::ListMonitorsResponse>(tx.list_monitors(request.page(), request.page_size()),
                                                   request.page(), request.page_size());
        });
      });
  add("GET", "/api/v1/monitors/{id}", k_viewer, nullptr, v1::Monitor::descriptor(), "A heartbeat monitor",
      [this](CallPtr call) {
        read(call, [id = call->params.at("id")](StoreTransaction& tx, const ApiCall&) -> std::unique_ptr<Message> {
          auto stored = tx.monitor(id);
          if (!stored) throw_not_found("monitor", id);
          return std::make_unique<v1::Monitor>(std::move(stored->monitor));
        });
      });
  const auto put_monitor = [this, audit_entry](CallPtr call, bool create) {
    v1::Monitor monitor;
    if (!body_into(*call, monitor)) return;
    // The ping token: 32 random bytes, shown in full by this answer only.
    const std::string token = create ? base64_encode(random_bytes(32), true) : std::string();
    const std::string target = create ? monitor.id() : call->params.at("id");
    write_alerts(call, create ? "monitor.create" : "monitor.update", "monitor", target,
                 [monitor, create, token, audit_entry](StoreTransaction& tx,
                                                       const ApiCall& c) mutable -> std::unique_ptr<Message> {
                   Violations path("monitor");
                   if (!create) take_path_id(monitor, c.params.at("id"), path);
                   path.throw_if_any();
                   auto before = tx.monitor(monitor.id());
                   if (create && before)
                     throw ApiException{{v1::API_ERROR_CODE_ALREADY_EXISTS,
                                         fmt::format("invalid monitor: id: \"{}\" is already taken", monitor.id()),
                                         {field_violation("id", "is already taken")}}};
                   if (!create && !before) throw_not_found("monitor", monitor.id());
                   validate_monitor(monitor);
                   StoredMonitor stored;
                   stored.monitor = monitor;
                   auto& m = stored.monitor;
                   // Output-only fields are the store's, never the client's.
                   if (before) {
                     m.set_token(before->monitor.token());
                     m.set_last_ping_unix_ms(before->monitor.last_ping_unix_ms());
                     m.set_last_start_unix_ms(before->monitor.last_start_unix_ms());
                     m.set_last_fail_unix_ms(before->monitor.last_fail_unix_ms());
                     m.set_status(before->monitor.status());
                     m.set_created_unix_ms(before->monitor.created_unix_ms());
                     stored.token_sha256 = before->token_sha256;
                   } else {
                     m.set_token(token_hint(token));
                     m.clear_last_ping_unix_ms();
                     m.clear_last_start_unix_ms();
                     m.clear_last_fail_unix_ms();
                     m.set_status("NEW");
                     m.set_created_unix_ms(now_unix_ms());
                     stored.token_sha256 = sha256_hex(token);
                   }
                   tx.put_monitor(stored);
                   tx.append_audit(audit_entry(c, create ? "monitor.create" : "monitor.update", "monitor", m.id(),
                                               before ? &before->monitor : nullptr, &m));
                   auto out = std::make_unique<v1::Monitor>(m);
                   if (create) out->set_token(token);
                   return out;
                 });
  };
  add(
      "POST", "/api/v1/monitors", k_operator, v1::Monitor::descriptor(), v1::Monitor::descriptor(),
      "Create a heartbeat monitor; the answer holds its ping token in full, the only time it is shown",
      [put_monitor](CallPtr call) { put_monitor(std::move(call), true); }, 201);
  add("PUT", "/api/v1/monitors/{id}", k_operator, v1::Monitor::descriptor(), v1::Monitor::descriptor(),
      "Replace a heartbeat monitor's schedule, grace and description (its token stays)",
      [put_monitor](CallPtr call) { put_monitor(std::move(call), false); });
  add("DELETE", "/api/v1/monitors/{id}", k_operator, nullptr, nullptr, "Delete a heartbeat monitor",
      [this, audit_entry](CallPtr call) {
        const std::string id = call->params.at("id");
        write_alerts(call, "monitor.delete", "monitor", id,
                     [id, audit_entry](StoreTransaction& tx, const ApiCall& c) -> std::unique_ptr<Message> {
                       auto before = tx.monitor(id);
                       if (!before) throw_not_found("monitor", id);
                       tx.delete_monitor(id);
                       tx.append_audit(audit_entry(c, "monitor.delete", "monitor", id, &before->monitor, nullptr));
                       return std::make_unique<v1::ApiError>();
                     });
      });

  // --- alerts ---
  add("GET", "/api/v1/alerts", k_viewer, v1::ListAlertsRequest::descriptor(), v1::ListAlertsResponse::descriptor(),
      "List alerts, newest first (state, rule_id, task_id)", [this](CallPtr call) {
        v1::ListAlertsRequest request;
        if (!query_into(*call, request)) return;
        read(call, [request](StoreTransaction& tx, const ApiCall&) {
          AlertFilter filter;
          filter.state = request.state();
          filter.rule_id = request.rule_id();
          filter.task_id = request.task_id();
          filter.page = request.page();
          filter.page_size = request.page_size();
          return page_of<v1::ListAlertsResponse>(tx.list_alerts(filter), request.page(), request.page_size());
        });
      });
  add("GET", "/api/v1/alerts/{id}", k_viewer, nullptr, v1::Alert::descriptor(), "An alert", [this](CallPtr call) {
    read(call, [id = call->params.at("id")](StoreTransaction& tx, const ApiCall&) -> std::unique_ptr<Message> {
      auto alert = tx.alert(id);
      if (!alert) throw_not_found("alert", id);
      return std::make_unique<v1::Alert>(std::move(*alert));
    });
  });
  add("POST", "/api/v1/alerts/{id}/ack", k_operator, v1::AckAlertRequest::descriptor(), v1::Alert::descriptor(),
      "Acknowledge a firing alert (stops its repeats and escalation, not its recovery notice)",
      [this, audit_entry](CallPtr call) {
        v1::AckAlertRequest request;
        if (!call->request.body.empty() && !body_into(*call, request)) return;
        const std::string id = call->params.at("id");
        write_alerts(call, "alert.ack", "alert", id,
                     [id, request, audit_entry](StoreTransaction& tx, const ApiCall& c) -> std::unique_ptr<Message> {
                       Violations v("acknowledgement");
                       check_text(v, "comment", request.comment());
                       v.throw_if_any();
                       auto alert = tx.alert(id);
                       if (!alert) throw_not_found("alert", id);
                       if (alert->state() != v1::ALERT_STATE_FIRING)
                         throw ApiException{{v1::API_ERROR_CODE_FAILED_PRECONDITION,
                                             fmt::format("cannot acknowledge alert \"{}\": it is resolved", id),
                                             {field_violation("id", "the alert is resolved")}}};
                       const auto before = *alert;
                       alert->set_acknowledged_by(c.actor.name);
                       alert->set_acknowledged_unix_ms(now_unix_ms());
                       alert->set_acknowledge_comment(request.comment());
                       tx.upsert_alert(*alert);
                       auto entry = audit_entry(c, "alert.ack", "alert", id, &before, &*alert);
                       entry.set_detail(request.comment());
                       tx.append_audit(entry);
                       return std::make_unique<v1::Alert>(std::move(*alert));
                     });
      });

  // --- deliveries ---
  add("GET", "/api/v1/deliveries", k_viewer, v1::ListDeliveriesRequest::descriptor(),
      v1::ListDeliveriesResponse::descriptor(),
      "The delivery outbox, newest first: notifications and result callbacks with their attempts",
      [this](CallPtr call) {
        v1::ListDeliveriesRequest request;
        if (!query_into(*call, request)) return;
        read(call, [request](StoreTransaction& tx, const ApiCall&) {
          DeliveryFilter filter;
          filter.state = request.state();
          filter.kind = request.kind();
          filter.channel_id = request.channel_id();
          filter.execution_id = request.execution_id();
          filter.page = request.page();
          filter.page_size = request.page_size();
          return page_of<v1::ListDeliveriesResponse>(tx.list_deliveries(filter), request.page(), request.page_size());
        });
      });
  add_alert_action_routes();
}

}  // namespace quartzflow::detail
