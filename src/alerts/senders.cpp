// SPDX-License-Identifier: Apache-2.0
// HTTP through the HTTP task executor; SMTP through libcurl on a worker thread.
#include "senders.hpp"

#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include <pthread.h>

#include <curl/curl.h>
#include <fmt/format.h>

#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>

namespace quartzflow::alerts {

namespace asio = boost::asio;

// ---- HTTP -------------------------------------------------------------------------------

std::string escape_placeholders(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t start = 0;
  while (true) {
    const auto open = text.find("${", start);
    if (open == std::string_view::npos) {
      out += text.substr(start);
      return out;
    }
    out += text.substr(start, open - start);
    out += "$${";
    start = open + 2;
  }
}

HttpSender::HttpSender(asio::any_io_executor executor) : executor_(make_http_executor(std::move(executor))) {}

void HttpSender::async_send(const HttpMessage& message, const HttpSendOptions& options,
                            std::function<void(HttpAnswer)> done) {
  auto task = std::make_shared<v1::Task>();
  auto* http = task->mutable_http();
  http->set_method(message.method);
  http->set_url(escape_placeholders(message.url));
  for (const auto& [name, value] : message.headers) (*http->mutable_headers())[name] = escape_placeholders(value);
  http->set_body(escape_placeholders(message.body));
  http->set_timeout_seconds(static_cast<std::uint32_t>(std::max<std::int64_t>(1, options.timeout.count())));
  http->set_ca_file(options.ca_file);
  RunRequest request;
  request.execution_id = options.execution_id;
  request.task = std::move(task);
  request.capture_limit = 16 << 10;
  // The handle is not kept: destroying it does not stop the request, the deadline ends it.
  const auto timeout_seconds = http->timeout_seconds();
  (void)executor_->start(std::move(request), [done = std::move(done), timeout_seconds](RunOutcome outcome) {
    HttpAnswer answer;
    answer.status = outcome.http_status;
    answer.body = std::move(outcome.output);
    if (outcome.status == v1::EXECUTION_STATUS_TIMEOUT) {
      answer.timed_out = true;
      answer.status = 0;
      // The executor's text names the task's field; this is the channel's or callback's.
      outcome.error_message = fmt::format("no complete answer within {} s", timeout_seconds);
    }
    if (answer.status == 0) {
      answer.error = outcome.error_message.empty() ? outcome.failure_reason : outcome.error_message;
      if (answer.error.empty()) answer.error = "no answer";
    }
    done(std::move(answer));
  });
}

// ---- SMTP -------------------------------------------------------------------------------

namespace {

struct UploadSource {
  std::string_view data;
  std::size_t offset = 0;
};

std::size_t read_upload(char* buffer, std::size_t size, std::size_t count, void* user) {
  auto* source = static_cast<UploadSource*>(user);
  const std::size_t n = std::min(size * count, source->data.size() - source->offset);
  std::memcpy(buffer, source->data.data() + source->offset, n);
  source->offset += n;
  return n;
}

std::uint32_t default_port(v1::SmtpSecurity security) {
  if (security == v1::SMTP_SECURITY_TLS) return 465;
  if (security == v1::SMTP_SECURITY_NONE) return 25;
  return 587;
}

/// One submission, blocking (the worker thread's).
SmtpResult submit(const EmailMessage& message, const SmtpOptions& options) {
  static std::once_flag global_init;
  std::call_once(global_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  SmtpResult result;
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), &curl_easy_cleanup);
  if (!curl) {
    result.error = "cannot create a libcurl handle";
    return result;
  }
  const bool tls = options.security == v1::SMTP_SECURITY_TLS;
  const std::uint32_t port = options.port != 0 ? options.port : default_port(options.security);
  const std::string host = options.host.find(':') != std::string::npos ? "[" + options.host + "]" : options.host;
  const std::string url = fmt::format("{}://{}:{}", tls ? "smtps" : "smtp", host, port);
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> recipients(nullptr, &curl_slist_free_all);
  for (const auto& address : message.rcpt_to) {
    recipients.reset(curl_slist_append(recipients.release(), ("<" + address + ">").c_str()));
  }
  const std::string mail_from = "<" + message.mail_from + ">";
  UploadSource source{message.data};
  char error_buffer[CURL_ERROR_SIZE] = {};
  CURL* h = curl.get();
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(options.timeout.count() * 1000));
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options.timeout.count() * 1000));
  if (options.security == v1::SMTP_SECURITY_NONE) {
    curl_easy_setopt(h, CURLOPT_USE_SSL, static_cast<long>(CURLUSESSL_NONE));
  } else if (!tls) {
    // STARTTLS, and no mail at all when the server does not offer it.
    curl_easy_setopt(h, CURLOPT_USE_SSL, static_cast<long>(CURLUSESSL_ALL));
  }
  if (!options.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, options.ca_file.c_str());
  if (!options.username.empty()) {
    curl_easy_setopt(h, CURLOPT_USERNAME, options.username.c_str());
    curl_easy_setopt(h, CURLOPT_PASSWORD, options.password.c_str());
  }
  curl_easy_setopt(h, CURLOPT_MAIL_FROM, mail_from.c_str());
  curl_easy_setopt(h, CURLOPT_MAIL_RCPT, recipients.get());
  curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(h, CURLOPT_READFUNCTION, &read_upload);
  curl_easy_setopt(h, CURLOPT_READDATA, &source);
  const CURLcode code = curl_easy_perform(h);
  long reply = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &reply);
  result.smtp_code = static_cast<unsigned>(reply);
  if (code == CURLE_OK) {
    result.verdict = Verdict::delivered;
    return result;
  }
  // A 5xx reply is the server's permanent refusal (RFC 5321 4.2.1), e.g. 535 bad credentials
  // or 550 no such mailbox; no STARTTLS offered is a refusal too. The rest may pass later.
  const bool permanent = (reply >= 500 && reply < 600) || code == CURLE_USE_SSL_FAILED || code == CURLE_LOGIN_DENIED;
  result.verdict = permanent ? Verdict::give_up : Verdict::retry;
  const std::string detail = error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(code);
  result.error = reply != 0 ? fmt::format("SMTP {} ({}:{}): {}", reply, options.host, port, detail)
                            : fmt::format("SMTP to {}:{}: {}", options.host, port, detail);
  return result;
}

}  // namespace

struct SmtpSender::Impl {
  using Work = decltype(asio::prefer(std::declval<asio::any_io_executor>(), asio::execution::outstanding_work.tracked));
  struct Job {
    EmailMessage message;
    SmtpOptions options;
    std::function<void(SmtpResult)> done;
    /// Held from the call to the completion: the io_context's run() does not return while a
    /// submission is owed (the thread posts to it).
    Work work;
  };

  explicit Impl(asio::any_io_executor ex) : executor(std::move(ex)) {
    thread = std::thread([this] { run(); });
  }

  ~Impl() {
    {
      const std::lock_guard lock(mutex);
      stopping = true;
    }
    wake.notify_all();
    if (thread.joinable()) thread.join();
  }

  void run() {
    pthread_setname_np(pthread_self(), "qf-smtp");
    while (true) {
      Job job;
      bool abandoned = false;
      {
        std::unique_lock lock(mutex);
        wake.wait(lock, [&] { return stopping || !jobs.empty(); });
        if (jobs.empty()) return;
        job = std::move(jobs.front());
        jobs.pop_front();
        abandoned = stopping;
      }
      SmtpResult result;
      if (abandoned) {
        result.error = "the sender stopped before this message was submitted";
      } else {
        result = submit(job.message, job.options);
      }
      asio::post(job.work, [done = std::move(job.done), result = std::move(result), work = job.work]() mutable {
        done(std::move(result));
      });
    }
  }

  asio::any_io_executor executor;
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<Job> jobs;
  bool stopping = false;
  std::thread thread;
};

SmtpSender::SmtpSender(asio::any_io_executor executor) : impl_(std::make_unique<Impl>(std::move(executor))) {}

SmtpSender::~SmtpSender() = default;

void SmtpSender::async_send(EmailMessage message, SmtpOptions options, std::function<void(SmtpResult)> done) {
  {
    const std::lock_guard lock(impl_->mutex);
    impl_->jobs.push_back({std::move(message), std::move(options), std::move(done),
                           asio::prefer(impl_->executor, asio::execution::outstanding_work.tracked)});
  }
  impl_->wake.notify_one();
}

std::string redact(std::string text, const std::vector<std::string>& secrets) {
  for (const auto& secret : secrets) {
    if (secret.size() < 4) continue;
    std::size_t at = 0;
    while ((at = text.find(secret, at)) != std::string::npos) {
      text.replace(at, secret.size(), "[redacted]");
      at += 10;
    }
  }
  return text;
}

}  // namespace quartzflow::alerts
