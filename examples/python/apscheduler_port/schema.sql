-- SPDX-License-Identifier: Apache-2.0
-- The example's database: the jobs to load at start, and a row per run.
CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, spec TEXT NOT NULL, command TEXT NOT NULL,
                   enabled INTEGER NOT NULL DEFAULT 1, successes INTEGER NOT NULL DEFAULT 0,
                   failures INTEGER NOT NULL DEFAULT 0);
CREATE TABLE runs (job_id TEXT NOT NULL, at REAL NOT NULL, ok INTEGER NOT NULL);
INSERT INTO jobs (id, kind, spec, command, enabled) VALUES
  ('tick', 'interval', '1', 'ok', 1),             -- every second
  ('even-seconds', 'cron', '*/2 * * * * *', 'ok', 1), -- six fields: seconds first
  ('flaky', 'cron', '* * * * * *', 'fail', 1),    -- fails every time; removed while running
  ('weekdays', 'cron', '0 3 * * mon-fri', 'ok', 1), -- five fields: 03:00 on weekdays
  ('off', 'interval', '1', 'ok', 0);              -- disabled: never loaded
