// SPDX-License-Identifier: Apache-2.0
// Senders: what puts a formatted message on the wire. HTTP(S) through the HTTP task executor
// (the project's one Beast translation unit), e-mail through libcurl's SMTP on a worker thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/executor.hpp>
#include <quartzflow/v1/alerts.pb.h>

#include "channels/channel_format.hpp"

namespace quartzflow::alerts {

/// How an HTTP request went: an answer (any status) or a transport failure.
struct HttpAnswer {
  unsigned status = 0;     ///< 0: no answer (connect error, TLS error, timeout)
  std::string body;        ///< the first 16 KiB of the answer's body
  bool timed_out = false;  ///< no complete answer within the timeout
  std::string error;       ///< what went wrong when status is 0 (origin only, never the path)
};

struct HttpSendOptions {
  std::chrono::seconds timeout{10};
  std::string ca_file;       ///< empty: the system trust store
  std::string execution_id;  ///< sent as X-QF-Execution-Id by the executor
};

/**
 * POSTs HttpMessages with the HTTP task executor (`make_http_executor`): TLS verified against
 * the system store or `ca_file`, one connection per request, no redirects, the timeout as a
 * deadline for the whole request. `${` in the URL, headers and body is escaped so that the
 * executor's placeholders leave every byte as the formatter wrote it (the signature covers
 * them). `done` runs on the executor, never inline. Thread safety: use from the executor.
 */
class HttpSender {
 public:
  explicit HttpSender(boost::asio::any_io_executor executor);
  void async_send(const HttpMessage& message, const HttpSendOptions& options, std::function<void(HttpAnswer)> done);

 private:
  std::unique_ptr<Executor> executor_;
};

/// `text` with every `${` written `$${`: the HTTP executor's placeholder syntax turns it back.
std::string escape_placeholders(std::string_view text);

/// How an SMTP submission went.
struct SmtpResult {
  Verdict verdict = Verdict::retry;  ///< delivered; give_up on a 5xx reply; retry otherwise
  unsigned smtp_code = 0;            ///< the server's last reply code, 0 when none
  std::string error;                 ///< empty when delivered
};

struct SmtpOptions {
  std::string host;
  std::uint32_t port = 0;  ///< 0: 587, 465 for TLS, 25 for NONE
  v1::SmtpSecurity security = v1::SMTP_SECURITY_UNSPECIFIED;
  std::string username;
  std::string password;
  std::string ca_file;
  std::chrono::seconds timeout{10};
};

/**
 * Submits EmailMessages over SMTP with libcurl (STARTTLS required, TLS from the first byte,
 * or plain for a local relay; AUTH when a username is given; the server verified against the
 * system store or `ca_file`). libcurl's easy interface blocks, so submissions run one at a
 * time on a worker thread (`qf-smtp`) and complete on the executor; the io thread never waits.
 * The destructor finishes the submission in progress (at most its timeout) and completes the
 * queued ones with an error. Thread safety: use from the executor.
 */
class SmtpSender {
 public:
  explicit SmtpSender(boost::asio::any_io_executor executor);
  ~SmtpSender();
  SmtpSender(const SmtpSender&) = delete;
  SmtpSender& operator=(const SmtpSender&) = delete;
  void async_send(EmailMessage message, SmtpOptions options, std::function<void(SmtpResult)> done);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// `text` with each of `secrets` (those of 4 characters and more) replaced by `[redacted]`.
std::string redact(std::string text, const std::vector<std::string>& secrets);

}  // namespace quartzflow::alerts
