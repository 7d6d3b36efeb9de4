// SPDX-License-Identifier: Apache-2.0
// Checks made before a certificate and its key are used: the validity dates (an expired
// certificate fails every handshake with a vague alert; say so at start instead) and the
// key file's permissions.
#include <sys/stat.h>

#include <cstdio>
#include <memory>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <quartzflow/certs.hpp>

namespace quartzflow {

namespace {

std::optional<std::chrono::system_clock::time_point> to_time_point(const ASN1_TIME* t) {
  std::tm tm{};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return std::nullopt;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::string utc_text(std::chrono::system_clock::time_point t) {
  return fmt::format("{:%Y-%m-%d %H:%M:%S} UTC", fmt::gmtime(std::chrono::system_clock::to_time_t(t)));
}

}  // namespace

std::optional<std::string> certificate_date_problem(const std::string& cert_file,
                                                    std::chrono::system_clock::time_point now, std::string& warning) {
  warning.clear();
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(cert_file.c_str(), "r"), &std::fclose);
  if (!file) return std::nullopt;  // the TLS library names a missing file in its own words
  std::unique_ptr<X509, void (*)(X509*)> cert(PEM_read_X509(file.get(), nullptr, nullptr, nullptr), &X509_free);
  if (!cert) return std::nullopt;
  const auto not_before = to_time_point(X509_get0_notBefore(cert.get()));
  const auto not_after = to_time_point(X509_get0_notAfter(cert.get()));
  if (!not_before || !not_after) return std::nullopt;
  const std::string dates = fmt::format("valid from {} to {}", utc_text(*not_before), utc_text(*not_after));
  if (now < *not_before)
    return fmt::format("{}: the certificate is not valid yet ({}; now {}): check this host's clock", cert_file, dates,
                       utc_text(now));
  if (now > *not_after)
    return fmt::format("{}: the certificate has expired ({}; now {}): issue a new one (qfctl certs issue)", cert_file,
                       dates, utc_text(now));
  if (*not_after - now < std::chrono::hours(24 * 30)) {
    const auto days = std::chrono::duration_cast<std::chrono::hours>(*not_after - now).count() / 24;
    warning = fmt::format("{}: the certificate expires in {} day(s) ({}): issue a new one (qfctl certs issue)",
                          cert_file, days, dates);
  }
  return std::nullopt;
}

std::optional<std::string> key_file_permission_problem(const std::string& key_file, std::string& warning) {
  warning.clear();
  struct stat info {};
  if (::stat(key_file.c_str(), &info) != 0) return std::nullopt;
  const auto mode = info.st_mode & 07777;
  if ((info.st_mode & S_IRWXO) != 0)
    return fmt::format("{}: the private key is open to every user of this host (mode {:04o}); run chmod 600 on it",
                       key_file, mode);
  if ((info.st_mode & S_IRWXG) != 0)
    warning = fmt::format("{}: the private key is open to its group (mode {:04o}); chmod 600 is safer", key_file, mode);
  return std::nullopt;
}

}  // namespace quartzflow
