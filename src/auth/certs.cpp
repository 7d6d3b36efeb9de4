// SPDX-License-Identifier: Apache-2.0
// Cluster CA and certificates with OpenSSL 3.0 (EVP APIs only): key generation, signing,
// PEM files written all-or-nothing, and reading a certificate's common name.
#include <quartzflow/certs.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "certs_detail.hpp"

namespace quartzflow {
namespace {

namespace fs = std::filesystem;

constexpr int k_max_days = 36500;
/// ub-common-name (RFC 5280): OpenSSL refuses a longer CN.
constexpr std::size_t k_max_common_name = 64;
constexpr std::size_t k_max_agent_id = 253;
constexpr long k_backdate_seconds = detail::k_certificate_backdate_seconds;

struct BioFree {
  void operator()(BIO* bio) const noexcept { BIO_free_all(bio); }
};
struct X509Free {
  void operator()(X509* cert) const noexcept { X509_free(cert); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* key) const noexcept { EVP_PKEY_free(key); }
};
struct ExtensionFree {
  void operator()(X509_EXTENSION* extension) const noexcept { X509_EXTENSION_free(extension); }
};
struct BignumFree {
  void operator()(BIGNUM* number) const noexcept { BN_free(number); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using ExtensionPtr = std::unique_ptr<X509_EXTENSION, ExtensionFree>;
using BignumPtr = std::unique_ptr<BIGNUM, BignumFree>;

/// The oldest queued OpenSSL error as text (and the queue cleared), for details.
std::string openssl_error_text() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

error_code invalid(std::string& detail, std::string text) {
  detail = std::move(text);
  return errc::invalid_argument;
}

/// An OpenSSL call failed where no input of ours is to blame (out of memory, no entropy).
error_code crypto_failure(std::string& detail, const char* what) {
  detail = fmt::format("{}: {}", what, openssl_error_text());
  return boost::system::errc::make_error_code(boost::system::errc::io_error);
}

error_code system_failure(std::string& detail, int error_number, const std::string& what) {
  error_code ec(error_number, boost::system::system_category());
  detail = fmt::format("{}: {}", what, ec.message());
  return ec;
}

/// The rule of agent ids (the coordinator's), minus '/': the id names the agent's files.
bool valid_agent_name(const std::string& name) {
  if (name.empty() || name.size() > k_max_agent_id) return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char c) { return c > 0x20 && c < 0x7f && c != '/'; });
}

/// A host name of letters, digits and hyphens (RFC 1123), dot-separated, not all-numeric at
/// the end (which is a mistyped IPv4 address rather than a name).
bool valid_dns_name(const std::string& name) {
  if (name.empty() || name.size() > 253) return false;
  std::size_t label_start = 0;
  bool last_label_numeric = true;
  while (label_start <= name.size()) {
    const std::size_t dot = std::min(name.find('.', label_start), name.size());
    const std::string_view label(name.data() + label_start, dot - label_start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    last_label_numeric = true;
    for (const unsigned char c : label) {
      if (!std::isalnum(c) && c != '-') return false;
      if (!std::isdigit(c)) last_label_numeric = false;
    }
    label_start = dot + 1;
  }
  return !last_label_numeric;
}

/// The canonical text of an IPv4 or IPv6 address (brackets allowed around IPv6), if it is one.
std::optional<std::string> canonical_ip(std::string text) {
  if (text.size() > 2 && text.front() == '[' && text.back() == ']') text = text.substr(1, text.size() - 2);
  unsigned char address[16];
  char canonical[INET6_ADDRSTRLEN];
  for (const int family : {AF_INET, AF_INET6})
    if (::inet_pton(family, text.c_str(), address) == 1 &&
        ::inet_ntop(family, address, canonical, sizeof canonical) != nullptr)
      return std::string(canonical);
  return std::nullopt;
}

/// Appends `IP:...` or `DNS:...` for `value` (unless already there).
error_code add_subject_alt_name(const char* field, const std::string& value, std::vector<std::string>& names,
                                std::string& detail) {
  std::string entry;
  if (const auto ip = canonical_ip(value))
    entry = "IP:" + *ip;
  else if (valid_dns_name(value))
    entry = "DNS:" + value;
  else
    return invalid(detail, fmt::format("{}: \"{}\" must be an IPv4 or IPv6 address or a DNS name (without a port)",
                                       field, value));
  if (std::find(names.begin(), names.end(), entry) == names.end()) names.push_back(std::move(entry));
  return {};
}

error_code check_days(int days, std::string& detail) {
  if (days < 1 || days > k_max_days)
    return invalid(detail, fmt::format("days: {} is out of range 1-{}", days, k_max_days));
  return {};
}

error_code check_common_name(const char* field, const std::string& name, std::string& detail) {
  if (name.size() > k_max_common_name)
    return invalid(detail, fmt::format("{}: \"{}\" is {} characters long; a certificate's common name holds at most {}",
                                       field, name, name.size(), k_max_common_name));
  return {};
}

/// The file opened for reading, or null with `ec` and `detail` saying why.
BioPtr open_pem(const std::string& path, error_code& ec, std::string& detail) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) {
    const int saved_errno = errno;
    ERR_clear_error();
    ec = system_failure(detail, saved_errno != 0 ? saved_errno : ENOENT, path + ": cannot open");
  }
  return bio;
}

X509Ptr read_certificate(const std::string& path, error_code& ec, std::string& detail) {
  BioPtr bio = open_pem(path, ec, detail);
  if (!bio) return nullptr;
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    ec = errc::invalid_argument;
    detail = fmt::format("{}: not a PEM certificate ({})", path, openssl_error_text());
    return nullptr;
  }
  return cert;
}

PkeyPtr read_private_key(const std::string& path, error_code& ec, std::string& detail) {
  BioPtr bio = open_pem(path, ec, detail);
  if (!bio) return nullptr;
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    ec = errc::invalid_argument;
    detail = fmt::format("{}: not an unencrypted PEM private key ({})", path, openssl_error_text());
    return nullptr;
  }
  return key;
}

PkeyPtr generate_key() { return PkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")); }

std::optional<std::string> memory_bio_text(BIO* bio) {
  char* data = nullptr;
  const long length = BIO_get_mem_data(bio, &data);
  if (length <= 0 || data == nullptr) return std::nullopt;
  return std::string(data, static_cast<std::size_t>(length));
}

std::optional<std::string> certificate_pem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return std::nullopt;
  return memory_bio_text(bio.get());
}

/// PKCS#8, unencrypted ("BEGIN PRIVATE KEY"): what GnuTLS and OpenSSL both read.
std::optional<std::string> private_key_pem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return std::nullopt;
  return memory_bio_text(bio.get());
}

/// What goes into one certificate.
struct CertificateSpec {
  std::string common_name;
  int days = 0;
  long seconds = 0;  ///< added to `days`
  /// (NID, OpenSSL config value) in the order they are added.
  std::vector<std::pair<int, std::string>> extensions;
};

/// A v3 certificate for `subject_key`, signed by `issuer_key` (self-signed when `issuer` is null).
X509Ptr build_certificate(const CertificateSpec& spec, EVP_PKEY* subject_key, X509* issuer, EVP_PKEY* issuer_key) {
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) return nullptr;

  // A random positive serial: the top bit cleared keeps the DER integer positive, the next
  // one set keeps it 16 bytes long and never zero.
  unsigned char serial_bytes[16];
  if (RAND_bytes(serial_bytes, sizeof serial_bytes) != 1) return nullptr;
  serial_bytes[0] = static_cast<unsigned char>((serial_bytes[0] & 0x7f) | 0x40);
  const BignumPtr serial(BN_bin2bn(serial_bytes, sizeof serial_bytes, nullptr));
  if (!serial || BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr) return nullptr;

  // Backdated a little so that a peer whose clock runs behind accepts a fresh certificate.
  if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), -k_backdate_seconds) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(cert.get()), spec.days, spec.seconds, nullptr) == nullptr)
    return nullptr;

  X509_NAME* subject = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(spec.common_name.data()),
                                 static_cast<int>(spec.common_name.size()), -1, 0) != 1)
    return nullptr;
  if (X509_set_issuer_name(cert.get(), issuer != nullptr ? X509_get_subject_name(issuer) : subject) != 1 ||
      X509_set_pubkey(cert.get(), subject_key) != 1)
    return nullptr;

  X509V3_CTX context;
  X509V3_set_ctx(&context, issuer != nullptr ? issuer : cert.get(), cert.get(), nullptr, nullptr, 0);
  for (const auto& [nid, value] : spec.extensions) {
    const ExtensionPtr extension(X509V3_EXT_nconf_nid(nullptr, &context, nid, value.c_str()));
    if (!extension || X509_add_ext(cert.get(), extension.get(), -1) != 1) return nullptr;
  }
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) <= 0) return nullptr;
  return cert;
}

/**
 * Files written all-or-nothing: each is staged as a temporary file in the target directory
 * (written, chmod-ed, fsync-ed), then `commit` renames them all into place. A failure before
 * or during the commit removes what this object wrote.
 */
class StagedFiles {
 public:
  StagedFiles() = default;
  StagedFiles(const StagedFiles&) = delete;
  StagedFiles& operator=(const StagedFiles&) = delete;
  ~StagedFiles() {
    for (const auto& entry : entries_)
      if (!entry.renamed) ::unlink(entry.temp.c_str());
  }

  error_code stage(const fs::path& target, const std::string& content, mode_t mode, std::string& detail) {
    std::string pattern = (target.parent_path() / ("." + target.filename().string() + ".tmp-XXXXXX")).string();
    const int fd = ::mkstemp(pattern.data());
    if (fd < 0) return system_failure(detail, errno, target.string() + ": cannot create");
    entries_.push_back({pattern, target, false, false});
    std::size_t written = 0;
    int write_errno = 0;
    if (::fchmod(fd, mode) != 0) write_errno = errno;
    while (write_errno == 0 && written < content.size()) {
      const ssize_t n = ::write(fd, content.data() + written, content.size() - written);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) write_errno = errno;
      else written += static_cast<std::size_t>(n);
    }
    if (write_errno == 0 && ::fsync(fd) != 0) write_errno = errno;
    if (::close(fd) != 0 && write_errno == 0) write_errno = errno;
    if (write_errno != 0) return system_failure(detail, write_errno, target.string() + ": cannot write");
    return {};
  }

  error_code commit(std::string& detail) {
    for (auto& entry : entries_) {
      std::error_code ignored;
      entry.existed = fs::exists(entry.target, ignored);
      if (::rename(entry.temp.c_str(), entry.target.c_str()) != 0) {
        const int rename_errno = errno;
        // Take back the files this commit created; a replaced one cannot be restored.
        for (auto& done : entries_)
          if (done.renamed && !done.existed) ::unlink(done.target.c_str());
        return system_failure(detail, rename_errno, entry.target.string() + ": cannot rename into place");
      }
      entry.renamed = true;
    }
    if (!entries_.empty()) {
      // The renames survive a power loss only once the directory is flushed.
      const int dir_fd = ::open(entries_.front().target.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dir_fd >= 0) {
        ::fsync(dir_fd);
        ::close(dir_fd);
      }
    }
    return {};
  }

 private:
  struct Entry {
    std::string temp;
    fs::path target;
    bool existed;
    bool renamed;
  };
  std::vector<Entry> entries_;
};

/// Writes a certificate (0644) and its key (0600) together.
error_code write_pair(X509* cert, EVP_PKEY* key, const IssuedFiles& files, std::string& detail) {
  const auto cert_text = certificate_pem(cert);
  const auto key_text = private_key_pem(key);
  if (!cert_text || !key_text) return crypto_failure(detail, "cannot encode PEM");
  StagedFiles staged;
  if (auto ec = staged.stage(files.key_file, *key_text, 0600, detail)) return ec;
  if (auto ec = staged.stage(files.cert_file, *cert_text, 0644, detail)) return ec;
  return staged.commit(detail);
}

std::string ca_cert_path(const std::string& dir) { return (fs::path(dir) / "ca.pem").string(); }
std::string ca_key_path(const std::string& dir) { return (fs::path(dir) / "ca.key").string(); }

}  // namespace

error_code create_ca(const std::string& dir, const CaOptions& options, IssuedFiles& written, std::string& detail) {
  if (dir.empty()) return invalid(detail, "dir: must not be empty");
  if (options.common_name.empty()) return invalid(detail, "common_name: must not be empty");
  if (auto ec = check_common_name("common_name", options.common_name, detail)) return ec;
  if (auto ec = check_days(options.days, detail)) return ec;

  const IssuedFiles files{ca_cert_path(dir), ca_key_path(dir)};
  std::error_code fs_error;
  if (!options.force)
    for (const auto& path : {files.cert_file, files.key_file})
      if (fs::exists(path, fs_error)) {
        detail = fmt::format("{} already exists: the cluster CA is there; replacing it (force: "
                             "`qfctl certs init --force`) makes every certificate it signed stop verifying",
                             path);
        return boost::system::errc::make_error_code(boost::system::errc::file_exists);
      }

  const bool dir_existed = fs::exists(dir, fs_error);
  if (!dir_existed && !fs::create_directories(dir, fs_error) && fs_error)
    return system_failure(detail, fs_error.value(), dir + ": cannot create the directory");
  error_code ec = [&]() -> error_code {
    const PkeyPtr key = generate_key();
    if (!key) return crypto_failure(detail, "cannot generate the CA key");
    CertificateSpec spec;
    spec.common_name = options.common_name;
    spec.days = options.days;
    spec.extensions = {{NID_basic_constraints, "critical,CA:TRUE"},
                       {NID_key_usage, "critical,keyCertSign,cRLSign"},
                       {NID_subject_key_identifier, "hash"},
                       {NID_authority_key_identifier, "keyid:always"}};
    const X509Ptr cert = build_certificate(spec, key.get(), nullptr, key.get());
    if (!cert) return crypto_failure(detail, "cannot build the CA certificate");
    return write_pair(cert.get(), key.get(), files, detail);
  }();
  if (ec) {
    if (!dir_existed) fs::remove(dir, fs_error);  // only when still empty
    return ec;
  }
  written = files;
  return {};
}

IssuedFiles create_ca(const std::string& dir, const CaOptions& options) {
  IssuedFiles written;
  std::string detail;
  if (const error_code ec = create_ca(dir, options, written, detail)) throw error(ec, detail);
  return written;
}

error_code issue_certificate(const std::string& dir, const IssueOptions& options, IssuedFiles& written,
                             std::string& detail) {
  if (dir.empty()) return invalid(detail, "dir: must not be empty");
  CertificateSpec spec;
  std::vector<std::string> alt_names;
  std::string file_stem;
  if (options.kind == CertificateKind::agent) {
    if (!valid_agent_name(options.name))
      return invalid(detail, fmt::format("agent: \"{}\" must be 1-{} printable ASCII characters without spaces or '/'",
                                         options.name, k_max_agent_id));
    if (auto ec = check_common_name("agent", options.name, detail)) return ec;
    spec.common_name = options.name;
    if (valid_dns_name(options.name)) alt_names.push_back("DNS:" + options.name);
    spec.extensions.emplace_back(NID_ext_key_usage, "clientAuth,serverAuth");
    file_stem = "agent-" + options.name;
  } else {
    if (auto ec = add_subject_alt_name("coordinator", options.name, alt_names, detail)) return ec;
    const auto ip = canonical_ip(options.name);
    spec.common_name = ip ? *ip : options.name;
    if (auto ec = check_common_name("coordinator", spec.common_name, detail)) return ec;
    spec.extensions.emplace_back(NID_ext_key_usage, "serverAuth,clientAuth");
    std::string safe_host = spec.common_name;
    std::replace(safe_host.begin(), safe_host.end(), ':', '_');
    file_stem = "coordinator-" + safe_host;
  }
  for (const auto& name : options.extra_sans)
    if (auto ec = add_subject_alt_name("san", name, alt_names, detail)) return ec;
  if (auto ec = check_days(options.days, detail)) return ec;
  spec.days = options.days;

  const std::string ca_cert_file = ca_cert_path(dir);
  const std::string ca_key_file = ca_key_path(dir);
  std::error_code fs_error;
  for (const auto& path : {ca_cert_file, ca_key_file})
    if (!fs::exists(path, fs_error)) {
      detail = fmt::format("{} does not exist: create the cluster CA first with `qfctl certs init --dir {}`", path, dir);
      return boost::system::errc::make_error_code(boost::system::errc::no_such_file_or_directory);
    }
  error_code ec;
  const X509Ptr ca_cert = read_certificate(ca_cert_file, ec, detail);
  if (!ca_cert) return ec;
  const PkeyPtr ca_key = read_private_key(ca_key_file, ec, detail);
  if (!ca_key) return ec;
  if (X509_check_ca(ca_cert.get()) == 0) {
    ERR_clear_error();
    return invalid(detail, ca_cert_file + ": not a CA certificate");
  }
  if (X509_check_private_key(ca_cert.get(), ca_key.get()) != 1) {
    ERR_clear_error();
    return invalid(detail, fmt::format("{}: not the key of {}", ca_key_file, ca_cert_file));
  }

  std::string alt_names_text;
  for (const auto& name : alt_names) alt_names_text += (alt_names_text.empty() ? "" : ",") + name;
  spec.extensions.insert(spec.extensions.begin(), {{NID_basic_constraints, "critical,CA:FALSE"},
                                                   {NID_key_usage, "critical,digitalSignature"}});
  spec.extensions.emplace_back(NID_subject_key_identifier, "hash");
  spec.extensions.emplace_back(NID_authority_key_identifier, "keyid:always");
  if (!alt_names_text.empty()) spec.extensions.emplace_back(NID_subject_alt_name, alt_names_text);

  const PkeyPtr key = generate_key();
  if (!key) return crypto_failure(detail, "cannot generate a key");
  const X509Ptr cert = build_certificate(spec, key.get(), ca_cert.get(), ca_key.get());
  if (!cert) return crypto_failure(detail, "cannot build the certificate");
  const IssuedFiles files{(fs::path(dir) / (file_stem + ".pem")).string(),
                          (fs::path(dir) / (file_stem + ".key")).string()};
  if (auto write_error = write_pair(cert.get(), key.get(), files, detail)) return write_error;
  written = files;
  return {};
}

IssuedFiles issue_certificate(const std::string& dir, const IssueOptions& options) {
  IssuedFiles written;
  std::string detail;
  if (const error_code ec = issue_certificate(dir, options, written, detail)) throw error(ec, detail);
  return written;
}

namespace detail {

bool valid_certificate_agent_id(const std::string& agent_id) {
  return valid_agent_name(agent_id) && agent_id.size() <= k_max_common_name;
}

X509* build_agent_certificate(EVP_PKEY* subject_key, X509* ca_cert, EVP_PKEY* ca_key, const std::string& agent_id,
                              long validity_seconds) {
  CertificateSpec spec;
  spec.common_name = agent_id;
  spec.seconds = validity_seconds;
  spec.extensions = {{NID_basic_constraints, "critical,CA:FALSE"},
                     {NID_key_usage, "critical,digitalSignature"},
                     {NID_ext_key_usage, "clientAuth,serverAuth"},
                     {NID_subject_key_identifier, "hash"},
                     {NID_authority_key_identifier, "keyid:always"}};
  if (valid_dns_name(agent_id)) spec.extensions.emplace_back(NID_subject_alt_name, "DNS:" + agent_id);
  return build_certificate(spec, subject_key, ca_cert, ca_key).release();
}

}  // namespace detail

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
