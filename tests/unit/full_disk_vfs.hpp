// SPDX-License-Identifier: Apache-2.0
// A full disk for SQLite in unit tests: a VFS over the default one whose writes fail with
// SQLITE_FULL (what SQLite's unix VFS returns for ENOSPC) while the test says the disk is full.
#pragma once

#include <atomic>
#include <cstring>

#include <catch2/catch.hpp>
#include <sqlite3.h>

namespace quartzflow::testing {

/**
 * While alive, the default SQLite VFS of the process: connections opened meanwhile (a
 * LocalStore's) go through it. `set_full(true)` makes every write to a file fail with
 * SQLITE_FULL, as a disk without free blocks does; `set_full(false)` gives the space back.
 * One at a time; the previous default VFS is restored by the destructor. Connections opened
 * through it must be closed before it is destroyed.
 */
class FullDiskVfs {
 public:
  FullDiskVfs() {
    REQUIRE(instance() == nullptr);
    real_ = sqlite3_vfs_find(nullptr);
    REQUIRE(real_ != nullptr);
    vfs_ = *real_;
    vfs_.pNext = nullptr;
    vfs_.zName = "qf-full-disk";
    vfs_.szOsFile = static_cast<int>(sizeof(File)) + real_->szOsFile;
    vfs_.xOpen = &open;
    instance() = this;
    REQUIRE(sqlite3_vfs_register(&vfs_, 1) == SQLITE_OK);
  }
  ~FullDiskVfs() {
    sqlite3_vfs_register(real_, 1);
    sqlite3_vfs_unregister(&vfs_);
    instance() = nullptr;
  }
  FullDiskVfs(const FullDiskVfs&) = delete;
  FullDiskVfs& operator=(const FullDiskVfs&) = delete;

  void set_full(bool full) noexcept { full_.store(full); }
  /// Writes refused since construction.
  int refused_writes() const noexcept { return refused_.load(); }

 private:
  /// Our file, followed in the same allocation by the real VFS's file.
  struct File {
    sqlite3_file base;
    sqlite3_file* real;
  };

  static FullDiskVfs*& instance() {
    static FullDiskVfs* current = nullptr;
    return current;
  }
  static sqlite3_file* real_file(sqlite3_file* f) { return reinterpret_cast<File*>(f)->real; }

  static int open(sqlite3_vfs*, const char* name, sqlite3_file* file, int flags, int* out_flags);

  static int write(sqlite3_file* f, const void* data, int amount, sqlite3_int64 offset) {
    if (instance()->full_.load()) {
      instance()->refused_.fetch_add(1);
      return SQLITE_FULL;
    }
    return real_file(f)->pMethods->xWrite(real_file(f), data, amount, offset);
  }
  static int close(sqlite3_file* f) {
    const int rc = real_file(f)->pMethods ? real_file(f)->pMethods->xClose(real_file(f)) : SQLITE_OK;
    f->pMethods = nullptr;
    return rc;
  }

  static const sqlite3_io_methods* methods(const sqlite3_io_methods* real) {
    // One table per real table version; the unix VFS uses a few, all of version 3.
    static sqlite3_io_methods table = [] {
      sqlite3_io_methods m{};
      m.iVersion = 3;
      m.xClose = &close;
      m.xRead = [](sqlite3_file* f, void* data, int n, sqlite3_int64 off) {
        return real_file(f)->pMethods->xRead(real_file(f), data, n, off);
      };
      m.xWrite = &write;
      m.xTruncate = [](sqlite3_file* f, sqlite3_int64 size) {
        return real_file(f)->pMethods->xTruncate(real_file(f), size);
      };
      m.xSync = [](sqlite3_file* f, int flags) { return real_file(f)->pMethods->xSync(real_file(f), flags); };
      m.xFileSize = [](sqlite3_file* f, sqlite3_int64* size) {
        return real_file(f)->pMethods->xFileSize(real_file(f), size);
      };
      m.xLock = [](sqlite3_file* f, int lock) { return real_file(f)->pMethods->xLock(real_file(f), lock); };
      m.xUnlock = [](sqlite3_file* f, int lock) { return real_file(f)->pMethods->xUnlock(real_file(f), lock); };
      m.xCheckReservedLock = [](sqlite3_file* f, int* out) {
        return real_file(f)->pMethods->xCheckReservedLock(real_file(f), out);
      };
      m.xFileControl = [](sqlite3_file* f, int op, void* arg) {
        return real_file(f)->pMethods->xFileControl(real_file(f), op, arg);
      };
      m.xSectorSize = [](sqlite3_file* f) { return real_file(f)->pMethods->xSectorSize(real_file(f)); };
      m.xDeviceCharacteristics = [](sqlite3_file* f) {
        return real_file(f)->pMethods->xDeviceCharacteristics(real_file(f));
      };
      m.xShmMap = [](sqlite3_file* f, int page, int size, int extend, void volatile** out) {
        return real_file(f)->pMethods->xShmMap(real_file(f), page, size, extend, out);
      };
      m.xShmLock = [](sqlite3_file* f, int offset, int n, int flags) {
        return real_file(f)->pMethods->xShmLock(real_file(f), offset, n, flags);
      };
      m.xShmBarrier = [](sqlite3_file* f) { real_file(f)->pMethods->xShmBarrier(real_file(f)); };
      m.xShmUnmap = [](sqlite3_file* f, int remove) { return real_file(f)->pMethods->xShmUnmap(real_file(f), remove); };
      m.xFetch = [](sqlite3_file* f, sqlite3_int64 off, int n, void** out) {
        return real_file(f)->pMethods->xFetch(real_file(f), off, n, out);
      };
      m.xUnfetch = [](sqlite3_file* f, sqlite3_int64 off, void* p) {
        return real_file(f)->pMethods->xUnfetch(real_file(f), off, p);
      };
      return m;
    }();
    (void)real;  // the unix VFS's tables are all of version 3
    return &table;
  }

  sqlite3_vfs* real_ = nullptr;
  sqlite3_vfs vfs_{};
  std::atomic<bool> full_{false};
  std::atomic<int> refused_{0};
};

inline int FullDiskVfs::open(sqlite3_vfs*, const char* name, sqlite3_file* file, int flags, int* out_flags) {
  auto* ours = reinterpret_cast<File*>(file);
  ours->real = reinterpret_cast<sqlite3_file*>(ours + 1);
  std::memset(ours->real, 0, static_cast<std::size_t>(instance()->real_->szOsFile));
  const int rc = instance()->real_->xOpen(instance()->real_, name, ours->real, flags, out_flags);
  ours->base.pMethods = ours->real->pMethods ? methods(ours->real->pMethods) : nullptr;
  return rc;
}

}  // namespace quartzflow::testing
