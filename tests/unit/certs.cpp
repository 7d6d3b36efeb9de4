// SPDX-License-Identifier: Apache-2.0
// Cluster CA and certificates: what OpenSSL verifies, what the certificates say, which files
// appear with which modes, and what bad input leaves behind (nothing).
#include <quartzflow/certs.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "temp_dir.hpp"

namespace qf = quartzflow;
using quartzflow::testing::TempDir;

namespace {

struct X509Free {
  void operator()(X509* cert) const noexcept { X509_free(cert); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* key) const noexcept { EVP_PKEY_free(key); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

X509Ptr load_cert(const std::string& path) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_file(path.c_str(), "r"), &BIO_free);
  REQUIRE(bio);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(cert);
  return cert;
}

PkeyPtr load_key(const std::string& path) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_file(path.c_str(), "r"), &BIO_free);
  REQUIRE(bio);
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(key);
  return key;
}

/// X509_verify_cert of `cert_file` against the single CA in `ca_file` for `purpose`;
/// returns the verification error (X509_V_OK on success).
int verify(const std::string& ca_file, const std::string& cert_file, int purpose) {
  std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store(X509_STORE_new(), &X509_STORE_free);
  const X509Ptr ca = load_cert(ca_file);
  REQUIRE(X509_STORE_add_cert(store.get(), ca.get()) == 1);
  const X509Ptr cert = load_cert(cert_file);
  std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> context(X509_STORE_CTX_new(),
                                                                           &X509_STORE_CTX_free);
  REQUIRE(X509_STORE_CTX_init(context.get(), store.get(), cert.get(), nullptr) == 1);
  REQUIRE(X509_STORE_CTX_set_purpose(context.get(), purpose) == 1);
  const int verified = X509_verify_cert(context.get());
  const int error = X509_STORE_CTX_get_error(context.get());
  CHECK((verified == 1) == (error == X509_V_OK));
  return error;
}

std::vector<std::string> subject_alt_names(X509* cert) {
  std::vector<std::string> names;
  auto* general_names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (general_names == nullptr) return names;
  for (int i = 0; i < sk_GENERAL_NAME_num(general_names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(general_names, i);
    int type = 0;
    const auto* value = static_cast<const ASN1_STRING*>(GENERAL_NAME_get0_value(name, &type));
    const std::string bytes(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                            static_cast<std::size_t>(ASN1_STRING_length(value)));
    if (type == GEN_DNS) names.push_back("DNS:" + bytes);
    if (type == GEN_IPADD) names.push_back("IP:" + std::to_string(bytes.size()) + "bytes");
  }
  GENERAL_NAMES_free(general_names);
  return names;
}

unsigned file_mode(const std::string& path) {
  struct stat status {};
  REQUIRE(::stat(path.c_str(), &status) == 0);
  return status.st_mode & 07777;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::set<std::string> directory_entries(const std::filesystem::path& dir) {
  std::set<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) names.insert(entry.path().filename().string());
  return names;
}

qf::IssueOptions agent(const std::string& name) {
  qf::IssueOptions options;
  options.kind = qf::CertificateKind::agent;
  options.name = name;
  return options;
}

qf::IssueOptions coordinator(const std::string& host, std::vector<std::string> sans = {}) {
  qf::IssueOptions options;
  options.kind = qf::CertificateKind::coordinator;
  options.name = host;
  options.extra_sans = std::move(sans);
  return options;
}

}  // namespace

TEST_CASE("the cluster CA is a self-signed CA certificate with a private key only the owner reads", "[certs]") {
  TempDir dir("qf-certs");
  const auto ca_dir = (dir.path() / "ca").string();  // created on demand
  qf::IssuedFiles written;
  std::string detail;
  REQUIRE_FALSE(qf::create_ca(ca_dir, {}, written, detail));
  CHECK(written.cert_file == (dir.path() / "ca" / "ca.pem").string());
  CHECK(written.key_file == (dir.path() / "ca" / "ca.key").string());
  CHECK(file_mode(written.key_file) == 0600);
  CHECK(file_mode(written.cert_file) == 0644);
  CHECK(directory_entries(ca_dir) == std::set<std::string>{"ca.pem", "ca.key"});

  const X509Ptr ca = load_cert(written.cert_file);
  CHECK(X509_check_ca(ca.get()) == 1);
  CHECK((X509_get_key_usage(ca.get()) & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)) == (KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  CHECK(X509_get0_subject_key_id(ca.get()) != nullptr);
  CHECK(X509_check_private_key(ca.get(), load_key(written.key_file).get()) == 1);
  CHECK(verify(written.cert_file, written.cert_file, X509_PURPOSE_ANY) == X509_V_OK);
  CHECK(qf::certificate_common_name(written.cert_file) == "QuartzFlow cluster CA");
  // About ten years.
  int days = 0;
  int seconds = 0;
  REQUIRE(ASN1_TIME_diff(&days, &seconds, nullptr, X509_get0_notAfter(ca.get())) == 1);
  CHECK(days >= 3649);
  CHECK(days <= 3650);
}

TEST_CASE("an agent certificate verifies against the CA as a TLS client and names the agent", "[certs]") {
  TempDir dir("qf-certs");
  const auto ca = qf::create_ca(dir.path().string());
  qf::IssuedFiles written;
  std::string detail;
  REQUIRE_FALSE(qf::issue_certificate(dir.path().string(), agent("worker-1"), written, detail));
  CHECK(written.cert_file == dir.file("agent-worker-1.pem"));
  CHECK(written.key_file == dir.file("agent-worker-1.key"));
  CHECK(file_mode(written.key_file) == 0600);

  CHECK(verify(ca.cert_file, written.cert_file, X509_PURPOSE_SSL_CLIENT) == X509_V_OK);
  const X509Ptr cert = load_cert(written.cert_file);
  CHECK(X509_check_private_key(cert.get(), load_key(written.key_file).get()) == 1);
  CHECK(qf::certificate_common_name(written.cert_file) == "worker-1");
  CHECK(subject_alt_names(cert.get()) == std::vector<std::string>{"DNS:worker-1"});
  CHECK((X509_get_extended_key_usage(cert.get()) & XKU_SSL_CLIENT) != 0);
  CHECK(X509_check_ca(cert.get()) == 0);
  // Positive 128-bit serial, backdated start, default validity 825 days.
  const ASN1_INTEGER* serial = X509_get0_serialNumber(cert.get());
  CHECK(ASN1_STRING_length(serial) == 16);
  CHECK(ASN1_STRING_type(serial) == V_ASN1_INTEGER);  // not V_ASN1_NEG_INTEGER
  CHECK(X509_cmp_current_time(X509_get0_notBefore(cert.get())) < 0);
  int days = 0;
  int seconds = 0;
  REQUIRE(ASN1_TIME_diff(&days, &seconds, X509_get0_notBefore(cert.get()), X509_get0_notAfter(cert.get())) == 1);
  CHECK(days == 825);
}

TEST_CASE("an agent id that is not a DNS name becomes the CN without a DNS SAN", "[certs]") {
  TempDir dir("qf-certs");
  const auto ca = qf::create_ca(dir.path().string());
  const auto written = qf::issue_certificate(dir.path().string(), agent("batch_7@rack:3"));
  CHECK(written.cert_file == dir.file("agent-batch_7@rack:3.pem"));
  CHECK(qf::certificate_common_name(written.cert_file) == "batch_7@rack:3");
  CHECK(subject_alt_names(load_cert(written.cert_file).get()).empty());
  CHECK(verify(ca.cert_file, written.cert_file, X509_PURPOSE_SSL_CLIENT) == X509_V_OK);
}

TEST_CASE("a coordinator certificate carries its host and every extra name as SANs", "[certs]") {
  TempDir dir("qf-certs");
  const auto ca = qf::create_ca(dir.path().string());
  const auto written =
      qf::issue_certificate(dir.path().string(), coordinator("127.0.0.1", {"coord.example.com", "::1", "127.0.0.1"}));
  CHECK(written.cert_file == dir.file("coordinator-127.0.0.1.pem"));
  CHECK(written.key_file == dir.file("coordinator-127.0.0.1.key"));
  CHECK(file_mode(written.key_file) == 0600);
  CHECK(verify(ca.cert_file, written.cert_file, X509_PURPOSE_SSL_SERVER) == X509_V_OK);

  const X509Ptr cert = load_cert(written.cert_file);
  CHECK(qf::certificate_common_name(written.cert_file) == "127.0.0.1");
  // The repeated 127.0.0.1 appears once.
  CHECK(subject_alt_names(cert.get()) == std::vector<std::string>{"IP:4bytes", "DNS:coord.example.com", "IP:16bytes"});
  CHECK(X509_check_ip_asc(cert.get(), "127.0.0.1", 0) == 1);
  CHECK(X509_check_ip_asc(cert.get(), "::1", 0) == 1);
  CHECK(X509_check_host(cert.get(), "coord.example.com", 0, 0, nullptr) == 1);
  CHECK(X509_check_host(cert.get(), "other.example.com", 0, 0, nullptr) == 0);
  CHECK((X509_get_extended_key_usage(cert.get()) & XKU_SSL_SERVER) != 0);
}

TEST_CASE("a coordinator named by DNS or IPv6 gets a DNS SAN or a file-name-safe IPv6 name", "[certs]") {
  TempDir dir("qf-certs");
  const auto ca = qf::create_ca(dir.path().string());
  const auto by_name = qf::issue_certificate(dir.path().string(), coordinator("coord.internal"));
  CHECK(X509_check_host(load_cert(by_name.cert_file).get(), "coord.internal", 0, 0, nullptr) == 1);
  CHECK(subject_alt_names(load_cert(by_name.cert_file).get()) == std::vector<std::string>{"DNS:coord.internal"});

  const auto by_ipv6 = qf::issue_certificate(dir.path().string(), coordinator("[fd00:0::1]"));
  CHECK(by_ipv6.cert_file == dir.file("coordinator-fd00__1.pem"));
  CHECK(qf::certificate_common_name(by_ipv6.cert_file) == "fd00::1");
  CHECK(X509_check_ip_asc(load_cert(by_ipv6.cert_file).get(), "fd00::1", 0) == 1);
  CHECK(verify(ca.cert_file, by_ipv6.cert_file, X509_PURPOSE_SSL_SERVER) == X509_V_OK);
}

TEST_CASE("create_ca refuses to replace an existing CA unless forced", "[certs]") {
  TempDir dir("qf-certs");
  const auto first = qf::create_ca(dir.path().string());
  const std::string original = read_text(first.cert_file);
  qf::IssuedFiles written;
  std::string detail;
  const auto ec = qf::create_ca(dir.path().string(), {}, written, detail);
  CHECK(ec == boost::system::errc::file_exists);
  CHECK(detail.find(first.cert_file + " already exists") != std::string::npos);
  CHECK(detail.find("--force") != std::string::npos);
  CHECK(read_text(first.cert_file) == original);
  CHECK_THROWS_AS(qf::create_ca(dir.path().string()), qf::error);

  qf::CaOptions force;
  force.force = true;
  REQUIRE_FALSE(qf::create_ca(dir.path().string(), force, written, detail));
  CHECK(read_text(first.cert_file) != original);
  CHECK(directory_entries(dir.path()) == std::set<std::string>{"ca.pem", "ca.key"});
}

TEST_CASE("invalid names, SANs and days are rejected with the field and reason, nothing written", "[certs]") {
  TempDir dir("qf-certs");
  qf::create_ca(dir.path().string());
  const auto before = directory_entries(dir.path());
  auto rejected = [&](const qf::IssueOptions& options) {
    qf::IssuedFiles written;
    std::string detail;
    const auto ec = qf::issue_certificate(dir.path().string(), options, written, detail);
    CHECK(ec == qf::errc::invalid_argument);
    CHECK(written.cert_file.empty());
    return detail;
  };
  CHECK(rejected(agent("a b")) == "agent: \"a b\" must be 1-253 printable ASCII characters without spaces or '/'");
  CHECK(rejected(agent("")).find("agent: \"\" must be 1-253") == 0);
  CHECK(rejected(agent("../etc/passwd")).find("agent: \"../etc/passwd\" must be") == 0);
  CHECK(rejected(agent("caf\xc3\xa9")).find("printable ASCII") != std::string::npos);
  CHECK(rejected(agent(std::string(65, 'a'))).find("common name holds at most 64") != std::string::npos);
  CHECK(rejected(coordinator("coord:4433")) ==
        "coordinator: \"coord:4433\" must be an IPv4 or IPv6 address or a DNS name (without a port)");
  CHECK(rejected(coordinator("10.0.0.256")).find("coordinator: \"10.0.0.256\"") == 0);
  CHECK(rejected(coordinator("-bad.example")).find("coordinator:") == 0);
  CHECK(rejected(coordinator("127.0.0.1", {"good.example", "bad name"})).find("san: \"bad name\" must be") == 0);
  auto with_days = [](int days) {
    auto options = agent("worker-1");
    options.days = days;
    return options;
  };
  CHECK(rejected(with_days(0)) == "days: 0 is out of range 1-36500");
  CHECK(rejected(with_days(36501)) == "days: 36501 is out of range 1-36500");
  CHECK(directory_entries(dir.path()) == before);

  qf::CaOptions bad_ca;
  bad_ca.days = -1;
  bad_ca.force = true;
  qf::IssuedFiles written;
  std::string detail;
  CHECK(qf::create_ca(dir.path().string(), bad_ca, written, detail) == qf::errc::invalid_argument);
  CHECK(detail == "days: -1 is out of range 1-36500");
}

TEST_CASE("issuing without a CA names the missing file and the command that creates it", "[certs]") {
  TempDir dir("qf-certs");
  qf::IssuedFiles written;
  std::string detail;
  const auto ec = qf::issue_certificate(dir.path().string(), agent("worker-1"), written, detail);
  CHECK(ec == boost::system::errc::no_such_file_or_directory);
  CHECK(detail.find(dir.file("ca.pem") + " does not exist") == 0);
  CHECK(detail.find("qfctl certs init --dir " + dir.path().string()) != std::string::npos);
  CHECK(directory_entries(dir.path()).empty());
  CHECK_THROWS_AS(qf::issue_certificate(dir.path().string(), agent("worker-1")), qf::error);
}

TEST_CASE("issuing with a key that is not the CA's is refused", "[certs]") {
  TempDir first("qf-certs");
  TempDir second("qf-certs");
  qf::create_ca(first.path().string());
  qf::create_ca(second.path().string());
  std::filesystem::copy_file(second.file("ca.key"), first.file("ca.key"),
                             std::filesystem::copy_options::overwrite_existing);
  qf::IssuedFiles written;
  std::string detail;
  CHECK(qf::issue_certificate(first.path().string(), agent("worker-1"), written, detail) == qf::errc::invalid_argument);
  CHECK(detail == first.file("ca.key") + ": not the key of " + first.file("ca.pem"));
  CHECK(directory_entries(first.path()) == std::set<std::string>{"ca.pem", "ca.key"});
}

TEST_CASE("a certificate signed by another cluster's CA fails verification", "[certs]") {
  TempDir ours("qf-certs");
  TempDir theirs("qf-certs");
  const auto our_ca = qf::create_ca(ours.path().string());
  qf::create_ca(theirs.path().string());
  const auto foreign = qf::issue_certificate(theirs.path().string(), agent("worker-1"));
  const auto own = qf::issue_certificate(ours.path().string(), agent("worker-1"));
  CHECK(verify(our_ca.cert_file, own.cert_file, X509_PURPOSE_SSL_CLIENT) == X509_V_OK);
  CHECK(verify(our_ca.cert_file, foreign.cert_file, X509_PURPOSE_SSL_CLIENT) ==
        X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
}

TEST_CASE("reissuing replaces the pair with a new key and a new serial", "[certs]") {
  TempDir dir("qf-certs");
  const auto ca = qf::create_ca(dir.path().string());
  const auto first = qf::issue_certificate(dir.path().string(), agent("worker-1"));
  const std::string first_key = read_text(first.key_file);
  const X509Ptr first_cert = load_cert(first.cert_file);
  const auto second = qf::issue_certificate(dir.path().string(), agent("worker-1"));
  CHECK(second.cert_file == first.cert_file);
  CHECK(read_text(second.key_file) != first_key);
  CHECK(ASN1_INTEGER_cmp(X509_get0_serialNumber(first_cert.get()),
                         X509_get0_serialNumber(load_cert(second.cert_file).get())) != 0);
  CHECK(verify(ca.cert_file, second.cert_file, X509_PURPOSE_SSL_CLIENT) == X509_V_OK);
  CHECK(directory_entries(dir.path()).size() == 4);
}

TEST_CASE("certificate_common_name reports unreadable files and non-certificates by name", "[certs]") {
  TempDir dir("qf-certs");
  qf::error_code ec;
  std::string detail;
  CHECK(qf::certificate_common_name(dir.file("missing.pem"), ec, detail).empty());
  CHECK(ec == boost::system::errc::no_such_file_or_directory);
  CHECK(detail.find(dir.file("missing.pem") + ": cannot open") == 0);

  std::ofstream(dir.file("junk.pem")) << "not a certificate\n";
  CHECK(qf::certificate_common_name(dir.file("junk.pem"), ec, detail).empty());
  CHECK(ec == qf::errc::invalid_argument);
  CHECK(detail.find(dir.file("junk.pem") + ": not a PEM certificate") == 0);
  CHECK_THROWS_AS(qf::certificate_common_name(dir.file("junk.pem")), qf::error);

  // A key file is not a certificate either.
  const auto ca = qf::create_ca(dir.path().string());
  CHECK(qf::certificate_common_name(ca.key_file, ec, detail).empty());
  CHECK(ec == qf::errc::invalid_argument);
  CHECK(qf::certificate_common_name(ca.cert_file, ec, detail) == "QuartzFlow cluster CA");
  CHECK_FALSE(ec);
}

TEST_CASE("certificates out of their dates and keys open to all are refused, naming file and dates", "[certs]") {
  TempDir dir("qf-certs");
  const auto d = dir.path().string();
  qf::create_ca(d);
  const auto issued = qf::issue_certificate(d, {qf::CertificateKind::agent, "agent-7", {}, 10});
  const auto now = std::chrono::system_clock::now();
  std::string warning;
  // Valid now, but within 30 days of its end: a warning.
  CHECK_FALSE(qf::certificate_date_problem(issued.cert_file, now, warning));
  CHECK_THAT(warning, Catch::Contains(issued.cert_file) && Catch::Contains("expires in 9 day(s)"));
  const auto expired = qf::certificate_date_problem(issued.cert_file, now + std::chrono::hours(24 * 11), warning);
  REQUIRE(expired);
  CHECK_THAT(*expired, Catch::Contains(issued.cert_file) && Catch::Contains("has expired") &&
                           Catch::Contains("valid from") && Catch::Contains(" UTC"));
  const auto early = qf::certificate_date_problem(issued.cert_file, now - std::chrono::hours(48), warning);
  REQUIRE(early);
  CHECK_THAT(*early, Catch::Contains("not valid yet") && Catch::Contains("clock"));
  // The CA (ten years) is fine without a warning.
  CHECK_FALSE(qf::certificate_date_problem(d + "/ca.pem", now, warning));
  CHECK(warning.empty());

  CHECK_FALSE(qf::key_file_permission_problem(issued.key_file, warning));
  CHECK(warning.empty());
  REQUIRE(::chmod(issued.key_file.c_str(), 0640) == 0);
  CHECK_FALSE(qf::key_file_permission_problem(issued.key_file, warning));
  CHECK_THAT(warning, Catch::Contains("0640"));
  REQUIRE(::chmod(issued.key_file.c_str(), 0644) == 0);
  const auto open_key = qf::key_file_permission_problem(issued.key_file, warning);
  REQUIRE(open_key);
  CHECK_THAT(*open_key, Catch::Contains(issued.key_file) && Catch::Contains("chmod 600"));
}
