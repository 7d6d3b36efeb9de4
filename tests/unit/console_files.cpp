// SPDX-License-Identifier: Apache-2.0
// The web console's static files as the admin server answers them: lookup, Content-Type,
// cache lifetimes, gzip negotiation, the CSP, index.html for client routes, console_dir.
#include <fstream>
#include <string>

#include <catch2/catch.hpp>

#include "admin/console_files.hpp"
#include "temp_dir.hpp"

namespace {

using quartzflow::ConsoleFile;
using quartzflow::detail::ApiResponse;
using quartzflow::detail::ConsoleFiles;

std::string header(const ApiResponse& r, std::string_view name) {
  for (const auto& [key, value] : r.headers)
    if (key == name) return value;
  return {};
}

const ConsoleFile k_files[] = {
    {"index.html", "<!doctype html><title>QuartzFlow</title>", "GZ-INDEX"},
    {"assets/index-3f2a1b9c.js", "console.log(1)", "GZ-JS"},
    {"assets/index-77aa00bb.css", "body{}", {}},
    {"favicon.svg", "<svg/>", {}},
};

}  // namespace

TEST_CASE("console files: a hashed asset is served with its type and cached for a year", "[admin]") {
  const ConsoleFiles files(k_files);
  const auto r = files.serve("/assets/index-3f2a1b9c.js", "");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->content_type == "text/javascript; charset=utf-8");
  CHECK(r->body == "console.log(1)");
  CHECK(header(*r, "Cache-Control") == "public, max-age=31536000, immutable");
  CHECK(header(*r, "Content-Encoding").empty());
  CHECK(header(*r, "Vary") == "Accept-Encoding");
  CHECK(files.serve("/assets/index-77aa00bb.css", "")->content_type == "text/css; charset=utf-8");
  CHECK(files.serve("/favicon.svg", "")->content_type == "image/svg+xml");
  CHECK(header(*files.serve("/favicon.svg", ""), "Cache-Control") == "no-cache");
}

TEST_CASE("console files: the gzip copy goes to clients that accept gzip, and only to them", "[admin]") {
  const ConsoleFiles files(k_files);
  const auto gzip = files.serve("/assets/index-3f2a1b9c.js", "br, gzip, deflate");
  CHECK(gzip->body == "GZ-JS");
  CHECK(header(*gzip, "Content-Encoding") == "gzip");
  CHECK(files.serve("/assets/index-3f2a1b9c.js", "gzip;q=0, br")->body == "console.log(1)");
  CHECK(files.serve("/assets/index-3f2a1b9c.js", "*")->body == "GZ-JS");
  CHECK(files.serve("/assets/index-3f2a1b9c.js", "*, gzip;q=0")->body == "console.log(1)");
  CHECK(files.serve("/assets/index-3f2a1b9c.js", "identity")->body == "console.log(1)");
  // No gzip copy: the plain file, whatever the client accepts.
  CHECK(files.serve("/assets/index-77aa00bb.css", "gzip")->body == "body{}");
  CHECK(quartzflow::detail::accepts_gzip("deflate, GZIP;q=0.5"));
  CHECK_FALSE(quartzflow::detail::accepts_gzip("gzip; q=0.0"));
}

TEST_CASE("console files: / and client-side routes answer index.html, never cached, with a strict CSP", "[admin]") {
  const ConsoleFiles files(k_files);
  for (const char* path : {"/", "/index.html", "/tasks", "/runs/abc%3A1", "/settings/users"}) {
    INFO(path);
    const auto r = files.serve(path, "");
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->content_type == "text/html; charset=utf-8");
    CHECK(r->body.starts_with("<!doctype html>"));
    CHECK(header(*r, "Cache-Control") == "no-cache");
    const auto csp = header(*r, "Content-Security-Policy");
    CHECK(csp.find("default-src 'self'") != std::string::npos);
    CHECK(csp.find("script-src 'self';") != std::string::npos);
    CHECK(csp.find("frame-ancestors 'none'") != std::string::npos);
    CHECK(csp.find("unsafe-eval") == std::string::npos);
  }
  CHECK(files.serve("/", "gzip")->body == "GZ-INDEX");
}

TEST_CASE("console files: the API's paths are not the console's, and a missing asset is a 404, not HTML", "[admin]") {
  const ConsoleFiles files(k_files);
  CHECK_FALSE(files.serve("/api/v1/tasks", ""));
  CHECK_FALSE(files.serve("/api", ""));
  const auto missing = files.serve("/assets/index-00000000.js", "");
  REQUIRE(missing);
  CHECK(missing->status == 404);
  CHECK(missing->content_type.starts_with("text/plain"));
  CHECK(files.serve("/%zz", "")->status == 404);
}

TEST_CASE("console files: without a built console, GET / says it was not built", "[admin]") {
  const ConsoleFiles none;
  CHECK(none.empty());
  const auto r = none.serve("/", "gzip");
  REQUIRE(r);
  CHECK(r->status == 404);
  CHECK(r->body.find("web console was not built") != std::string::npos);
  CHECK_FALSE(none.serve("/api/v1/tasks", ""));
}

TEST_CASE("console files: console_dir is read whole, with .gz copies beside their files", "[admin]") {
  quartzflow::testing::TempDir dir("qf-console");
  std::filesystem::create_directories(dir.path() / "assets");
  auto write = [&](const char* name, const std::string& text) { std::ofstream(dir.path() / name) << text; };
  write("index.html", "<!doctype html><p>from a directory</p>");
  write("assets/app-12345678.js", "let a = 1");
  write("assets/app-12345678.js.gz", "GZ");
  std::string problem;
  const auto files = ConsoleFiles::read_directory(dir.path().string(), problem);
  REQUIRE(problem.empty());
  CHECK(files.size() == 2);
  CHECK(files.serve("/", "")->body == "<!doctype html><p>from a directory</p>");
  CHECK(files.serve("/assets/app-12345678.js", "")->body == "let a = 1");
  CHECK(files.serve("/assets/app-12345678.js", "gzip")->body == "GZ");

  quartzflow::testing::TempDir empty("qf-console-empty");
  CHECK(ConsoleFiles::read_directory(empty.path().string(), problem).empty());
  CHECK(problem.find("no index.html") != std::string::npos);
  CHECK(ConsoleFiles::read_directory(empty.file("missing"), problem).empty());
  CHECK(problem.find("not a directory") != std::string::npos);
}
