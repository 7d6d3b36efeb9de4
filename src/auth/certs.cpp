// SPDX-License-Identifier: Apache-2.0
// Cluster CA and certificates with OpenSSL 3.0 (EVP APIs only): key generation, signing,
// PEM files written all-or-nothing, and reading a certificate's common name.
#include <quartzflow/certs.hpp>

#include <cerrno>
#include <cstdio>
#include <memory>

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

namespace quartzflow {
namespace {

struct BioFree {
  void operator()(BIO* bio) const noexcept { BIO_free_all(bio); }
};
struct X509Free {
  void operator()(X509* cert) const noexcept { X509_free(cert); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;

/// The oldest queued OpenSSL error as text (and the queue cleared), for details.
std::string openssl_error_text() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

X509Ptr read_certificate(const std::string& path, error_code& ec, std::string& detail) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) {
    const int saved_errno = errno;
    ERR_clear_error();
    ec = error_code(saved_errno != 0 ? saved_errno : ENOENT, boost::system::system_category());
    detail = fmt::format("{}: cannot open: {}", path, ec.message());
    return nullptr;
  }
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    ec = errc::invalid_argument;
    detail = fmt::format("{}: not a PEM certificate ({})", path, openssl_error_text());
    return nullptr;
  }
  return cert;
}

}  // namespace

std::string certificate_common_name(const std::string& cert_file, error_code& ec, std::string& detail) {
  ec.clear();
  const X509Ptr cert = read_certificate(cert_file, ec, detail);
  if (!cert) return {};
  const X509_NAME* subject = X509_get_subject_name(cert.get());
  const int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  const ASN1_STRING* value =
      index < 0 ? nullptr : X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index));
  unsigned char* utf8 = nullptr;
  const int length = value == nullptr ? -1 : ASN1_STRING_to_UTF8(&utf8, value);
  if (length <= 0) {
    OPENSSL_free(utf8);
    ERR_clear_error();
    ec = errc::invalid_argument;
    detail = fmt::format("{}: the certificate has no subject common name (CN)", cert_file);
    return {};
  }
  std::string name(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(length));
  OPENSSL_free(utf8);
  return name;
}

std::string certificate_common_name(const std::string& cert_file) {
  error_code ec;
  std::string detail;
  std::string name = certificate_common_name(cert_file, ec, detail);
  if (ec) throw error(ec, detail);
  return name;
}

}  // namespace quartzflow
