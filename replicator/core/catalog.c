/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The catalog on SQLite: schema creation and forward migration, a cache of
 * prepared statements keyed by their SQL text, and one small function per
 * query. SQLite result codes are translated to -errno here and nowhere
 * else. Schema and its rationale: docs/catalog.md.
 */
#include "ferry/catalog.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/fault.h"
#include "ferry/util.h"

#define STMT_CACHE_SIZE 64

struct stmt_slot {
	const char *sql; /* identity: statements are string literals */
	sqlite3_stmt *stmt;
};

struct ferry_catalog {
	sqlite3 *db;
	struct stmt_slot stmts[STMT_CACHE_SIZE];
	size_t nstmts;
	uint64_t local_commits;
	int in_tx;
	int unsynced; /* the open transaction is ferry_catalog_begin_unsynced's */
};

static const char schema_v1[] =
	"CREATE TABLE settings (\n"
	"  key TEXT PRIMARY KEY,\n"
	"  value TEXT NOT NULL);\n"
	"CREATE TABLE vms (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  name TEXT NOT NULL UNIQUE,\n"
	"  state INTEGER NOT NULL,\n"
	"  error TEXT NOT NULL DEFAULT '',\n"
	"  cache_url TEXT NOT NULL,\n"
	"  crash_interval INTEGER NOT NULL,\n"
	"  app_interval INTEGER NOT NULL,\n"
	"  retention INTEGER NOT NULL,\n"
	"  created_ns INTEGER NOT NULL,\n"
	"  applied_seq INTEGER NOT NULL DEFAULT 0,\n"
	"  applied_digest BLOB,\n"
	"  marker_seq INTEGER NOT NULL DEFAULT 0,\n"
	"  marker_ns INTEGER NOT NULL DEFAULT 0,\n"
	"  initial_done INTEGER NOT NULL DEFAULT 0,\n"
	"  initial_total INTEGER NOT NULL DEFAULT 0,\n"
	"  record BLOB,\n"
	"  state_record BLOB);\n"
	"CREATE TABLE resources (\n"
	"  id INTEGER PRIMARY KEY,\n"
	"  vm_id INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,\n"
	"  kind TEXT NOT NULL,\n"
	"  value TEXT NOT NULL,\n"
	"  UNIQUE (vm_id, kind));\n"
	"CREATE TABLE disks (\n"
	"  vm_id INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,\n"
	"  idx INTEGER NOT NULL,\n"
	"  name TEXT NOT NULL,\n"
	"  source_path TEXT NOT NULL,\n"
	"  size INTEGER NOT NULL DEFAULT 0,\n"
	"  live_root BLOB,\n"
	"  work_root BLOB,\n"
	"  PRIMARY KEY (vm_id, idx),\n"
	"  UNIQUE (vm_id, name));\n"
	"CREATE TABLE points (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  vm_id INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,\n"
	"  name TEXT NOT NULL,\n"
	"  time_ns INTEGER NOT NULL,\n"
	"  consistency INTEGER NOT NULL,\n"
	"  seq INTEGER NOT NULL,\n"
	"  record BLOB,\n"
	"  UNIQUE (vm_id, name));\n"
	"CREATE INDEX points_vm_time ON points (vm_id, time_ns);\n"
	"CREATE TABLE point_disks (\n"
	"  point_id INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,\n"
	"  idx INTEGER NOT NULL,\n"
	"  name TEXT NOT NULL,\n"
	"  size INTEGER NOT NULL,\n"
	"  root BLOB NOT NULL,\n"
	"  PRIMARY KEY (point_id, idx));\n"
	"CREATE TABLE packs (\n"
	"  id INTEGER PRIMARY KEY,\n"
	"  size INTEGER NOT NULL,\n"
	"  count INTEGER NOT NULL,\n"
	"  created_ns INTEGER NOT NULL);\n"
	"CREATE TABLE objects (\n"
	"  id BLOB PRIMARY KEY,\n"
	"  type INTEGER NOT NULL,\n"
	"  pack INTEGER NOT NULL,\n"
	"  offset INTEGER NOT NULL,\n"
	"  clen INTEGER NOT NULL,\n"
	"  plen INTEGER NOT NULL) WITHOUT ROWID;\n"
	"CREATE INDEX objects_pack ON objects (pack);\n"
	"CREATE TABLE events (\n"
	"  id INTEGER PRIMARY KEY,\n"
	"  time_ns INTEGER NOT NULL,\n"
	"  vm_id INTEGER,\n"
	"  level TEXT NOT NULL,\n"
	"  message TEXT NOT NULL);\n"
	"CREATE TABLE failovers (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  vm_id INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,\n"
	"  name TEXT NOT NULL,\n"
	"  kind INTEGER NOT NULL,\n"
	"  state INTEGER NOT NULL,\n"
	"  point_name TEXT NOT NULL,\n"
	"  point_time_ns INTEGER NOT NULL,\n"
	"  network TEXT NOT NULL,\n"
	"  subnet TEXT NOT NULL,\n"
	"  accel TEXT NOT NULL,\n"
	"  created_ns INTEGER NOT NULL,\n"
	"  UNIQUE (vm_id, name));\n"
	"CREATE TABLE clone_disks (\n"
	"  failover_id INTEGER NOT NULL REFERENCES failovers(id) ON DELETE CASCADE,\n"
	"  idx INTEGER NOT NULL,\n"
	"  name TEXT NOT NULL,\n"
	"  size INTEGER NOT NULL,\n"
	"  base_root BLOB NOT NULL,\n"
	"  root BLOB NOT NULL,\n"
	"  PRIMARY KEY (failover_id, idx));\n"
	"CREATE TABLE pack_intents (\n"
	"  pack INTEGER PRIMARY KEY,\n"
	"  created_ns INTEGER NOT NULL);\n"
	"CREATE TABLE jobs (\n"
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  vm_id INTEGER REFERENCES vms(id) ON DELETE CASCADE,\n"
	"  kind TEXT NOT NULL,\n"
	"  state TEXT NOT NULL,\n"
	"  started_ns INTEGER NOT NULL,\n"
	"  ended_ns INTEGER NOT NULL DEFAULT 0,\n"
	"  detail TEXT NOT NULL DEFAULT '');\n";

static int sql_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return -EBADMSG;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_CANTOPEN:
		return -ENOENT;
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_TOOBIG:
		return -E2BIG;
	default:
		return -EIO;
	}
}

/* A prepared, reset statement for sql (a string literal). */
static int prepare(struct ferry_catalog *c, const char *sql, sqlite3_stmt **ret)
{
	for (size_t i = 0; i < c->nstmts; i++)
		if (c->stmts[i].sql == sql) {
			sqlite3_reset(c->stmts[i].stmt);
			sqlite3_clear_bindings(c->stmts[i].stmt);
			*ret = c->stmts[i].stmt;
			return 0;
		}

	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL);
	if (rc != SQLITE_OK)
		return sql_errno(rc) ?: -EIO;
	if (c->nstmts < STMT_CACHE_SIZE) {
		c->stmts[c->nstmts++] = (struct stmt_slot){ sql, s };
	} else {
		/* Full: evict the oldest slot; callers never hold two of them. */
		sqlite3_finalize(c->stmts[0].stmt);
		memmove(c->stmts, c->stmts + 1, sizeof(c->stmts[0]) * (STMT_CACHE_SIZE - 1));
		c->stmts[STMT_CACHE_SIZE - 1] = (struct stmt_slot){ sql, s };
	}
	*ret = s;
	return 0;
}

/* Runs a statement that returns no rows. */
static int step_done(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	int r = rc == SQLITE_DONE ? 0 : (sql_errno(rc) ?: -EIO);
	sqlite3_reset(s);
	return r;
}

/* Steps once: 1 for a row, 0 when done, -errno on failure. */
static int step_row(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return sql_errno(rc) ?: -EIO;
}

static int exec(struct ferry_catalog *c, const char *sql)
{
	int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? 0 : (sql_errno(rc) ?: -EIO);
}

static void bind_id(sqlite3_stmt *s, int col, const struct ferry_id *id)
{
	if (ferry_id_is_null(id))
		sqlite3_bind_null(s, col);
	else
		sqlite3_bind_blob(s, col, id->b, FERRY_ID_SIZE, SQLITE_STATIC);
}

/* A NULL column is the null id; a blob of the wrong size is damage. */
static int column_id(sqlite3_stmt *s, int col, struct ferry_id *ret)
{
	if (sqlite3_column_type(s, col) == SQLITE_NULL) {
		memset(ret, 0, sizeof(*ret));
		return 0;
	}
	if (sqlite3_column_bytes(s, col) != FERRY_ID_SIZE)
		return -EBADMSG;
	memcpy(ret->b, sqlite3_column_blob(s, col), FERRY_ID_SIZE);
	return 0;
}

static void column_text(sqlite3_stmt *s, int col, char *buf, size_t bufsize)
{
	const unsigned char *t = sqlite3_column_text(s, col);
	snprintf(buf, bufsize, "%s", t ? (const char *)t : "");
}

static void catalog_close(struct ferry_catalog *c)
{
	for (size_t i = 0; i < c->nstmts; i++)
		sqlite3_finalize(c->stmts[i].stmt);
	sqlite3_close(c->db);
	free(c);
}

struct ferry_catalog *ferry_catalog_free(struct ferry_catalog *c)
{
	if (c)
		catalog_close(c);
	return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct ferry_catalog *, ferry_catalog_free)

static int catalog_connect(const char *path, int flags, struct ferry_catalog **ret)
{
	_cleanup_(ferry_catalog_freep) struct ferry_catalog *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	int rc = sqlite3_open_v2(path, &c->db, flags | SQLITE_OPEN_FULLMUTEX, NULL);
	if (rc != SQLITE_OK)
		return sql_errno(rc) ?: -EIO;
	sqlite3_extended_result_codes(c->db, 1);
	/* Concurrent replicator, CLI and ferryfs wait for each other briefly
	 * rather than fail; longer waits surface as -EBUSY. */
	sqlite3_busy_timeout(c->db, 10000);
	int r = exec(c, "PRAGMA foreign_keys = ON;");
	if (r < 0)
		return r;
	*ret = TAKE_PTR(c);
	return 0;
}

static int user_version(struct ferry_catalog *c, int *ret)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "PRAGMA user_version", &s);
	if (r < 0)
		return r;
	r = step_row(s);
	if (r <= 0)
		return r < 0 ? r : -EBADMSG;
	*ret = sqlite3_column_int(s, 0);
	sqlite3_reset(s);
	return 0;
}

/*
 * Forward migrations, one transaction per step; each step also sets
 * user_version, so a crash leaves the catalog at one version or the next.
 * docs/catalog.md lists them.
 */
static const char *const migrations[] = {
	/* 1 -> 2: ingest generations, which GC compares with its snapshot. */
	"ALTER TABLE packs ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;\n"
	"CREATE TABLE counters (\n"
	"  name TEXT PRIMARY KEY,\n"
	"  value INTEGER NOT NULL);\n"
	"INSERT INTO counters (name, value) VALUES ('gen', 0);\n"
	"ALTER TABLE pack_intents ADD COLUMN owner TEXT NOT NULL DEFAULT '';\n"
	"PRAGMA user_version = 2;\n",
	/* 2 -> 3: each VM's latest resync (ferry_vm_resync). */
	"CREATE TABLE resyncs (\n"
	"  vm_id INTEGER PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,\n"
	"  epoch INTEGER NOT NULL,\n"
	"  base_seq INTEGER NOT NULL,\n"
	"  base_digest BLOB NOT NULL,\n"
	"  requested_ns INTEGER NOT NULL,\n"
	"  done_ns INTEGER NOT NULL DEFAULT 0,\n"
	"  reason TEXT NOT NULL DEFAULT '');\n"
	"PRAGMA user_version = 3;\n",
	/* 3 -> 4: the consistency group round a point was cut at. */
	"ALTER TABLE points ADD COLUMN group_round INTEGER NOT NULL DEFAULT 0;\n"
	"PRAGMA user_version = 4;\n",
};

static int migrate(struct ferry_catalog *c, int from)
{
	for (int v = from; v < FERRY_CATALOG_SCHEMA_VERSION; v++) {
		int r = ferry_catalog_begin(c);
		if (r < 0)
			return r;
		r = exec(c, migrations[v - 1]);
		if (r < 0) {
			ferry_catalog_rollback(c);
			return r;
		}
		r = ferry_catalog_commit(c);
		if (r < 0)
			return r;
	}
	return 0;
}

/* SQLite would make the file 0644 less the umask, and its -wal, -shm and
 * journal files copy the database's mode: an empty file made first with
 * ours (SQLite takes it for a new database) keeps all of them private. */
static int create_private(const char *path)
{
	_cleanup_close_ int fd =
		open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, FERRY_FILE_MODE);
	return fd < 0 ? -errno : 0;
}

int ferry_catalog_create(const char *path, uint32_t chunk_size, const char *store_url)
{
	int r = create_private(path);
	if (r < 0)
		return r;

	_cleanup_(ferry_catalog_freep) struct ferry_catalog *c = NULL;
	r = catalog_connect(path, SQLITE_OPEN_READWRITE, &c);
	if (r < 0)
		return r;
	r = exec(c, "PRAGMA journal_mode = WAL;");
	if (r < 0)
		return r;

	char chunk[32], created[32];
	snprintf(chunk, sizeof(chunk), "%u", chunk_size);
	snprintf(created, sizeof(created), "%lld", (long long)ferry_now_ns());

	uint8_t rnd[16];
	if (getentropy(rnd, sizeof(rnd)) < 0)
		return -errno;
	char vault_id[33];
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(vault_id + 2 * i, 3, "%02x", rnd[i]);

	r = ferry_catalog_begin(c);
	if (r < 0)
		return r;
	r = exec(c, schema_v1);
	if (r >= 0)
		r = ferry_catalog_set_setting(c, "chunk_size", chunk);
	if (r >= 0)
		r = ferry_catalog_set_setting(c, "store_url", store_url);
	if (r >= 0)
		r = ferry_catalog_set_setting(c, "vault_id", vault_id);
	if (r >= 0)
		r = ferry_catalog_set_setting(c, "created_ns", created);
	if (r >= 0)
		r = exec(c, "PRAGMA user_version = 1;");
	if (r < 0) {
		ferry_catalog_rollback(c);
		return r;
	}
	r = ferry_catalog_commit(c);
	return r < 0 ? r : migrate(c, 1);
}

int ferry_catalog_open(const char *path, int readonly, struct ferry_catalog **ret)
{
	if (access(path, F_OK) < 0)
		return -errno;

	_cleanup_(ferry_catalog_freep) struct ferry_catalog *c = NULL;
	int r = catalog_connect(path, readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE, &c);
	if (r < 0)
		return r;

	int version;
	r = user_version(c, &version);
	if (r < 0)
		return r;
	if (version == 0)
		return -EBADMSG; /* not a ferry catalog, or creation never finished */
	if (version > FERRY_CATALOG_SCHEMA_VERSION)
		return -EPROTONOSUPPORT;
	/* A reader of an older catalog reads what it has; a writer migrates. */
	if (version < FERRY_CATALOG_SCHEMA_VERSION && !readonly) {
		r = migrate(c, version);
		if (r < 0)
			return r;
	}

	if (!readonly) {
		/* NORMAL is durable in WAL mode except for the last commits
		 * before a power loss; the replicator acknowledges segments
		 * only after commit, so FULL keeps every ack honest. */
		r = exec(c, "PRAGMA synchronous = FULL;");
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(c);
	return 0;
}

int ferry_catalog_begin(struct ferry_catalog *c)
{
	int r = exec(c, "BEGIN IMMEDIATE;");
	if (r >= 0)
		c->in_tx = 1;
	return r;
}

int ferry_catalog_begin_unsynced(struct ferry_catalog *c)
{
	/* In WAL mode NORMAL makes a commit visible to every connection at
	 * once but leaves the WAL's sync to a later FULL commit. */
	int r = exec(c, "PRAGMA synchronous = NORMAL;");
	if (r >= 0)
		r = ferry_catalog_begin(c);
	if (r >= 0)
		c->unsynced = 1;
	else
		(void)exec(c, "PRAGMA synchronous = FULL;");
	return r;
}

/* Back to durable commits after an unsynced transaction ended. */
static void end_unsynced(struct ferry_catalog *c)
{
	if (c->unsynced) {
		c->unsynced = 0;
		(void)exec(c, "PRAGMA synchronous = FULL;");
	}
}

int ferry_catalog_commit(struct ferry_catalog *c)
{
	int r = ferry_fault_before(FERRY_FAULT_COMMIT, NULL);
	if (r >= 0)
		r = exec(c, "COMMIT;");
	if (r < 0) {
		ferry_catalog_rollback(c);
		return r;
	}
	c->in_tx = 0;
	c->local_commits++;
	end_unsynced(c);
	ferry_fault_after(FERRY_FAULT_COMMIT);
	return 0;
}

int ferry_catalog_begin_read(struct ferry_catalog *c)
{
	/* A deferred transaction takes its snapshot at the first read: make
	 * that read now, so the snapshot is as old as this call. */
	int r = exec(c, "BEGIN DEFERRED;");
	if (r >= 0)
		r = exec(c, "SELECT count(*) FROM settings;");
	if (r < 0)
		ferry_catalog_rollback(c);
	else
		c->in_tx = 1;
	return r;
}

int ferry_catalog_in_transaction(const struct ferry_catalog *c)
{
	return sqlite3_get_autocommit(c->db) == 0;
}

void ferry_catalog_rollback(struct ferry_catalog *c)
{
	if (sqlite3_get_autocommit(c->db) == 0)
		(void)exec(c, "ROLLBACK;");
	c->in_tx = 0;
	end_unsynced(c);
}

int ferry_catalog_get_setting(struct ferry_catalog *c, const char *key, char *buf, size_t bufsize)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "SELECT value FROM settings WHERE key = ?", &s);
	if (r < 0)
		return r;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	r = step_row(s);
	if (r == 1)
		column_text(s, 0, buf, bufsize);
	sqlite3_reset(s);
	return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

int ferry_catalog_set_setting(struct ferry_catalog *c, const char *key, const char *value)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c,
			"INSERT INTO settings (key, value) VALUES (?, ?) "
			"ON CONFLICT (key) DO UPDATE SET value = excluded.value",
			&s);
	if (r < 0)
		return r;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
	return step_done(s);
}

/* ---- VMs ---- */

const char *ferry_vm_state_name(enum ferry_vm_state s)
{
	switch (s) {
	case FERRY_VM_INITIAL:
		return "initial-replication";
	case FERRY_VM_PROTECTED:
		return "protected";
	case FERRY_VM_ERROR:
		return "error";
	case FERRY_VM_FAILED_OVER:
		return "failed-over";
	case FERRY_VM_COMMITTED:
		return "failover-committed";
	case FERRY_VM_REPROTECTING:
		return "re-protecting";
	case FERRY_VM_FAILED_BACK:
		return "failed-back";
	case FERRY_VM_RESYNC_REQUIRED:
		return "resync-required";
	case FERRY_VM_RESYNCING:
		return "resyncing";
	}
	return "unknown";
}

#define VM_COLUMNS                                                                                 \
	"id, name, state, error, cache_url, crash_interval, app_interval, retention, created_ns, " \
	"applied_seq, applied_digest, marker_seq, marker_ns, initial_done, initial_total, "        \
	"record, state_record"

static int vm_from_row(sqlite3_stmt *s, struct ferry_vm *vm)
{
	memset(vm, 0, sizeof(*vm));
	vm->id = sqlite3_column_int64(s, 0);
	column_text(s, 1, vm->name, sizeof(vm->name));
	vm->state = (enum ferry_vm_state)sqlite3_column_int(s, 2);
	column_text(s, 3, vm->error, sizeof(vm->error));
	column_text(s, 4, vm->cache_url, sizeof(vm->cache_url));
	vm->crash_interval_s = sqlite3_column_int64(s, 5);
	vm->app_interval_s = sqlite3_column_int64(s, 6);
	vm->retention_s = sqlite3_column_int64(s, 7);
	vm->created_ns = sqlite3_column_int64(s, 8);
	vm->applied_seq = (uint64_t)sqlite3_column_int64(s, 9);
	int r = column_id(s, 10, &vm->applied_digest);
	vm->marker_seq = (uint64_t)sqlite3_column_int64(s, 11);
	vm->marker_ns = sqlite3_column_int64(s, 12);
	vm->initial_done_bytes = (uint64_t)sqlite3_column_int64(s, 13);
	vm->initial_total_bytes = (uint64_t)sqlite3_column_int64(s, 14);
	if (r >= 0)
		r = column_id(s, 15, &vm->record);
	if (r >= 0)
		r = column_id(s, 16, &vm->state_record);
	return r;
}

int ferry_catalog_vm_add(struct ferry_catalog *c, struct ferry_vm *vm)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c,
			"INSERT INTO vms (name, state, cache_url, crash_interval, app_interval, "
			"retention, created_ns, record, state_record) "
			"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
			&s);
	if (r < 0)
		return r;
	sqlite3_bind_text(s, 1, vm->name, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, vm->state);
	sqlite3_bind_text(s, 3, vm->cache_url, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, vm->crash_interval_s);
	sqlite3_bind_int64(s, 5, vm->app_interval_s);
	sqlite3_bind_int64(s, 6, vm->retention_s);
	sqlite3_bind_int64(s, 7, vm->created_ns);
	bind_id(s, 8, &vm->record);
	bind_id(s, 9, &vm->state_record);
	r = step_done(s);
	if (r < 0)
		return r;
	vm->id = sqlite3_last_insert_rowid(c->db);
	return 0;
}

static int vm_get_one(sqlite3_stmt *s, struct ferry_vm *ret)
{
	int r = step_row(s);
	if (r == 1) {
		struct ferry_vm vm;
		r = vm_from_row(s, &vm);
		if (r >= 0)
			*ret = vm;
		r = r < 0 ? r : 1;
	}
	sqlite3_reset(s);
	return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

int ferry_catalog_vm_get(struct ferry_catalog *c, const char *name, struct ferry_vm *ret)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "SELECT " VM_COLUMNS " FROM vms WHERE name = ?", &s);
	if (r < 0)
		return r;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	return vm_get_one(s, ret);
}

int ferry_catalog_vm_get_by_id(struct ferry_catalog *c, int64_t id, struct ferry_vm *ret)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "SELECT " VM_COLUMNS " FROM vms WHERE id = ?", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, id);
	return vm_get_one(s, ret);
}

int ferry_catalog_vm_update(struct ferry_catalog *c, const struct ferry_vm *vm)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c,
			"UPDATE vms SET state = ?, error = ?, cache_url = ?, crash_interval = ?, "
			"app_interval = ?, retention = ?, applied_seq = ?, applied_digest = ?, "
			"marker_seq = ?, marker_ns = ?, initial_done = ?, initial_total = ?, "
			"record = ?, state_record = ? WHERE id = ?",
			&s);
	if (r < 0)
		return r;
	sqlite3_bind_int(s, 1, vm->state);
	sqlite3_bind_text(s, 2, vm->error, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, vm->cache_url, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, vm->crash_interval_s);
	sqlite3_bind_int64(s, 5, vm->app_interval_s);
	sqlite3_bind_int64(s, 6, vm->retention_s);
	sqlite3_bind_int64(s, 7, (int64_t)vm->applied_seq);
	bind_id(s, 8, &vm->applied_digest);
	sqlite3_bind_int64(s, 9, (int64_t)vm->marker_seq);
	sqlite3_bind_int64(s, 10, vm->marker_ns);
	sqlite3_bind_int64(s, 11, (int64_t)vm->initial_done_bytes);
	sqlite3_bind_int64(s, 12, (int64_t)vm->initial_total_bytes);
	bind_id(s, 13, &vm->record);
	bind_id(s, 14, &vm->state_record);
	sqlite3_bind_int64(s, 15, vm->id);
	r = step_done(s);
	if (r < 0)
		return r;
	return sqlite3_changes(c->db) == 1 ? 0 : -ENOENT;
}

/* Feeds each VM row of s to cb, then finalizes s. */
static int vm_rows(sqlite3_stmt *s, int (*cb)(const struct ferry_vm *vm, void *userdata),
		   void *userdata)
{
	int r;
	while ((r = step_row(s)) == 1) {
		struct ferry_vm vm;
		r = vm_from_row(s, &vm);
		if (r >= 0)
			r = cb(&vm, userdata);
		if (r < 0)
			break;
	}
	sqlite3_finalize(s);
	return r < 0 ? r : 0;
}

int ferry_catalog_vm_list(struct ferry_catalog *c,
			  int (*cb)(const struct ferry_vm *vm, void *userdata), void *userdata)
{
	/* Not cached: callbacks may run other queries meanwhile. */
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(c->db, "SELECT " VM_COLUMNS " FROM vms ORDER BY name", -1, &s,
				    NULL);
	if (rc != SQLITE_OK)
		return sql_errno(rc) ?: -EIO;
	return vm_rows(s, cb, userdata);
}

/* Runs an uncached query with one int64 parameter and feeds each row to fn. */
static int for_each_row(struct ferry_catalog *c, const char *sql, int64_t param,
			int (*fn)(sqlite3_stmt *s, void *ctx), void *ctx)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(c->db, sql, -1, &s, NULL);
	if (rc != SQLITE_OK)
		return sql_errno(rc) ?: -EIO;
	if (sqlite3_bind_parameter_count(s) > 0)
		sqlite3_bind_int64(s, 1, param);
	int r;
	while ((r = step_row(s)) == 1) {
		r = fn(s, ctx);
		if (r < 0)
			break;
	}
	sqlite3_finalize(s);
	return r < 0 ? r : 0;
}

/* ---- resources ---- */

int ferry_catalog_resource_set(struct ferry_catalog *c, int64_t vm_id, const char *kind,
			       const char *value)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c,
			"INSERT INTO resources (vm_id, kind, value) VALUES (?, ?, ?) "
			"ON CONFLICT (vm_id, kind) DO UPDATE SET value = excluded.value",
			&s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, vm_id);
	sqlite3_bind_text(s, 2, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, value, -1, SQLITE_STATIC);
	return step_done(s);
}

int ferry_catalog_resource_get(struct ferry_catalog *c, int64_t vm_id, const char *kind, char *buf,
			       size_t bufsize)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "SELECT value FROM resources WHERE vm_id = ? AND kind = ?", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, vm_id);
	sqlite3_bind_text(s, 2, kind, -1, SQLITE_STATIC);
	r = step_row(s);
	if (r == 1)
		column_text(s, 0, buf, bufsize);
	sqlite3_reset(s);
	return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

int ferry_catalog_vm_list_by_resource(struct ferry_catalog *c, const char *kind, const char *value,
				      int (*cb)(const struct ferry_vm *vm, void *userdata),
				      void *userdata)
{
	/* Not cached: callbacks may run other queries meanwhile. */
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(c->db,
				    "SELECT " VM_COLUMNS " FROM vms WHERE id IN (SELECT vm_id FROM "
				    "resources WHERE kind = ? AND value = ?) ORDER BY name",
				    -1, &s, NULL);
	if (rc != SQLITE_OK)
		return sql_errno(rc) ?: -EIO;
	sqlite3_bind_text(s, 1, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
	return vm_rows(s, cb, userdata);
}

struct resource_ctx {
	int (*cb)(const char *kind, const char *value, void *userdata);
	void *userdata;
};

static int resource_row(sqlite3_stmt *s, void *ctx)
{
	struct resource_ctx *rc = ctx;
	return rc->cb((const char *)sqlite3_column_text(s, 0),
		      (const char *)sqlite3_column_text(s, 1), rc->userdata);
}

int ferry_catalog_resource_list(struct ferry_catalog *c, int64_t vm_id,
				int (*cb)(const char *kind, const char *value, void *userdata),
				void *userdata)
{
	struct resource_ctx ctx = { cb, userdata };
	return for_each_row(c, "SELECT kind, value FROM resources WHERE vm_id = ? ORDER BY id",
			    vm_id, resource_row, &ctx);
}

/* ---- disks ---- */

#define DISK_COLUMNS "vm_id, idx, name, source_path, size, live_root, work_root"

static int disk_from_row(sqlite3_stmt *s, struct ferry_disk *d)
{
	memset(d, 0, sizeof(*d));
	d->vm_id = sqlite3_column_int64(s, 0);
	d->idx = (uint16_t)sqlite3_column_int(s, 1);
	column_text(s, 2, d->name, sizeof(d->name));
	column_text(s, 3, d->source_path, sizeof(d->source_path));
	d->size = (uint64_t)sqlite3_column_int64(s, 4);
	int r = column_id(s, 5, &d->live_root);
	if (r >= 0)
		r = column_id(s, 6, &d->work_root);
	return r;
}

int ferry_catalog_disk_add(struct ferry_catalog *c, const struct ferry_disk *d)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "INSERT INTO disks (" DISK_COLUMNS ") VALUES (?, ?, ?, ?, ?, ?, ?)", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, d->vm_id);
	sqlite3_bind_int(s, 2, d->idx);
	sqlite3_bind_text(s, 3, d->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, d->source_path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 5, (int64_t)d->size);
	bind_id(s, 6, &d->live_root);
	bind_id(s, 7, &d->work_root);
	return step_done(s);
}

int ferry_catalog_disk_get(struct ferry_catalog *c, int64_t vm_id, const char *name,
			   struct ferry_disk *ret)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "SELECT " DISK_COLUMNS " FROM disks WHERE vm_id = ? AND name = ?", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, vm_id);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	r = step_row(s);
	if (r == 1) {
		struct ferry_disk d;
		r = disk_from_row(s, &d);
		if (r >= 0)
			*ret = d;
		r = r < 0 ? r : 1;
	}
	sqlite3_reset(s);
	return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

int ferry_catalog_disk_update(struct ferry_catalog *c, const struct ferry_disk *d)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c,
			"UPDATE disks SET size = ?, live_root = ?, work_root = ? "
			"WHERE vm_id = ? AND idx = ?",
			&s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, (int64_t)d->size);
	bind_id(s, 2, &d->live_root);
	bind_id(s, 3, &d->work_root);
	sqlite3_bind_int64(s, 4, d->vm_id);
	sqlite3_bind_int(s, 5, d->idx);
	r = step_done(s);
	if (r < 0)
		return r;
	return sqlite3_changes(c->db) == 1 ? 0 : -ENOENT;
}

struct disk_ctx {
	int (*cb)(const struct ferry_disk *d, void *userdata);
	void *userdata;
};

static int disk_row(sqlite3_stmt *s, void *ctx)
{
	struct disk_ctx *dc = ctx;
	struct ferry_disk d;
	int r = disk_from_row(s, &d);
	return r < 0 ? r : dc->cb(&d, dc->userdata);
}

int ferry_catalog_disk_list(struct ferry_catalog *c, int64_t vm_id,
			    int (*cb)(const struct ferry_disk *d, void *userdata), void *userdata)
{
	struct disk_ctx ctx = { cb, userdata };
	return for_each_row(c, "SELECT " DISK_COLUMNS " FROM disks WHERE vm_id = ? ORDER BY idx",
			    vm_id, disk_row, &ctx);
}

/* ---- recovery points ---- */

#define POINT_COLUMNS "id, vm_id, name, time_ns, consistency, seq, record, group_round"
/* The same from a catalog older than version 4, which a read-only opener
 * reads as it is: no point there was cut for a group. */
#define POINT_COLUMNS_V3 "id, vm_id, name, time_ns, consistency, seq, record, 0"

static void point_from_row(sqlite3_stmt *s, struct ferry_point *p)
{
	struct ferry_id record;
	/* A damaged record column only costs GC this record: not worth
	 * failing every listing of points for. */
	if (column_id(s, 6, &record) < 0)
		memset(&record, 0, sizeof(record));
	memset(p, 0, sizeof(*p));
	p->id = sqlite3_column_int64(s, 0);
	p->vm_id = sqlite3_column_int64(s, 1);
	column_text(s, 2, p->name, sizeof(p->name));
	p->time_ns = sqlite3_column_int64(s, 3);
	p->consistency = sqlite3_column_int(s, 4);
	p->seq = (uint64_t)sqlite3_column_int64(s, 5);
	p->record = record;
	p->group_round = (uint64_t)sqlite3_column_int64(s, 7);
}

int ferry_catalog_point_name_taken(struct ferry_catalog *c, int64_t vm_id, const char *name)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "SELECT 1 FROM points WHERE vm_id = ? AND name = ?", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, vm_id);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	r = step_row(s);
	sqlite3_reset(s);
	return r;
}

int ferry_catalog_point_pick_name(struct ferry_catalog *c, int64_t vm_id, int64_t time_ns,
				  char name[40])
{
	time_t t = (time_t)(time_ns / 1000000000);
	struct tm tm;
	if (!gmtime_r(&t, &tm))
		return -EINVAL;
	char base[24], buf[40];
	strftime(base, sizeof(base), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(buf, sizeof(buf), "%s", base);
	for (unsigned n = 2;; n++) {
		int r = ferry_catalog_point_name_taken(c, vm_id, buf);
		if (r < 0)
			return r;
		if (r == 0)
			break;
		snprintf(buf, sizeof(buf), "%s-%04u", base, n); /* sorts as it counts */
	}
	memcpy(name, buf, sizeof(buf));
	return 0;
}

int ferry_catalog_point_add(struct ferry_catalog *c, struct ferry_point *p,
			    const struct ferry_point_disk *disks, size_t ndisks)
{
	char name[sizeof(p->name)];
	if (p->name[0]) {
		if (!memchr(p->name, 0, sizeof(p->name)))
			return -EINVAL;
		memcpy(name, p->name, sizeof(name));
	} else {
		int r = ferry_catalog_point_pick_name(c, p->vm_id, p->time_ns, name);
		if (r < 0)
			return r;
	}

	sqlite3_stmt *s = NULL;
	int r = prepare(c,
			"INSERT INTO points (vm_id, name, time_ns, consistency, seq, record, "
			"group_round) VALUES (?, ?, ?, ?, ?, ?, ?)",
			&s);
	if (r < 0)
		return r;
	if (p->group_round > (uint64_t)INT64_MAX)
		return -EINVAL;
	sqlite3_bind_int64(s, 1, p->vm_id);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, p->time_ns);
	sqlite3_bind_int(s, 4, p->consistency);
	sqlite3_bind_int64(s, 5, (int64_t)p->seq);
	bind_id(s, 6, &p->record);
	sqlite3_bind_int64(s, 7, (int64_t)p->group_round);
	r = step_done(s);
	if (r < 0)
		return r;
	int64_t id = sqlite3_last_insert_rowid(c->db);

	r = prepare(c,
		    "INSERT INTO point_disks (point_id, idx, name, size, root) "
		    "VALUES (?, ?, ?, ?, ?)",
		    &s);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ndisks; i++) {
		sqlite3_bind_int64(s, 1, id);
		sqlite3_bind_int(s, 2, disks[i].idx);
		sqlite3_bind_text(s, 3, disks[i].name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 4, (int64_t)disks[i].size);
		/* An all-zero disk has the null root; store it as a blob so the
		 * NOT NULL constraint holds and rows stay uniform. */
		sqlite3_bind_blob(s, 5, disks[i].root.b, FERRY_ID_SIZE, SQLITE_STATIC);
		r = step_done(s);
		if (r < 0)
			return r;
	}
	p->id = id;
	memcpy(p->name, name, sizeof(name));
	return 0;
}

struct point_ctx {
	int (*cb)(const struct ferry_point *p, void *userdata);
	void *userdata;
};

static int point_row(sqlite3_stmt *s, void *ctx)
{
	struct point_ctx *pc = ctx;
	struct ferry_point p;
	point_from_row(s, &p);
	return pc->cb(&p, pc->userdata);
}

int ferry_catalog_point_list(struct ferry_catalog *c, int64_t vm_id,
			     int (*cb)(const struct ferry_point *p, void *userdata), void *userdata)
{
	struct point_ctx ctx = { cb, userdata };
	int version;
	int r = user_version(c, &version);
	if (r < 0)
		return r;
	return for_each_row(c,
			    version < 4 ? "SELECT " POINT_COLUMNS_V3 " FROM points WHERE vm_id = ? "
					  "ORDER BY time_ns, id" :
					  "SELECT " POINT_COLUMNS " FROM points WHERE vm_id = ? "
					  "ORDER BY time_ns, id",
			    vm_id, point_row, &ctx);
}

struct point_disk_ctx {
	int (*cb)(const struct ferry_point_disk *d, void *userdata);
	void *userdata;
};

static int point_disk_row(sqlite3_stmt *s, void *ctx)
{
	struct point_disk_ctx *pc = ctx;
	struct ferry_point_disk d = { 0 };
	d.idx = (uint16_t)sqlite3_column_int(s, 0);
	column_text(s, 1, d.name, sizeof(d.name));
	d.size = (uint64_t)sqlite3_column_int64(s, 2);
	int r = column_id(s, 3, &d.root);
	return r < 0 ? r : pc->cb(&d, pc->userdata);
}

int ferry_catalog_point_disks(struct ferry_catalog *c, int64_t point_id,
			      int (*cb)(const struct ferry_point_disk *d, void *userdata),
			      void *userdata)
{
	struct point_disk_ctx ctx = { cb, userdata };
	return for_each_row(c,
			    "SELECT idx, name, size, root FROM point_disks WHERE point_id = ? "
			    "ORDER BY idx",
			    point_id, point_disk_row, &ctx);
}

int ferry_catalog_point_delete(struct ferry_catalog *c, int64_t point_id)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "DELETE FROM points WHERE id = ?", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, point_id);
	r = step_done(s);
	if (r < 0)
		return r;
	return sqlite3_changes(c->db) == 1 ? 0 : -ENOENT;
}

/* ---- the store index ---- */

static void loc_from_row(sqlite3_stmt *s, int col, struct ferry_loc *loc)
{
	loc->type = (uint8_t)sqlite3_column_int(s, col);
	loc->pack = (uint64_t)sqlite3_column_int64(s, col + 1);
	loc->offset = (uint64_t)sqlite3_column_int64(s, col + 2);
	loc->clen = (uint32_t)sqlite3_column_int64(s, col + 3);
	loc->plen = (uint32_t)sqlite3_column_int64(s, col + 4);
}

int ferry_catalog_object_get(struct ferry_catalog *c, const struct ferry_id *id,
			     struct ferry_loc *ret)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "SELECT type, pack, offset, clen, plen FROM objects WHERE id = ?", &s);
	if (r < 0)
		return r;
	sqlite3_bind_blob(s, 1, id->b, FERRY_ID_SIZE, SQLITE_STATIC);
	r = step_row(s);
	if (r == 1)
		loc_from_row(s, 0, ret);
	sqlite3_reset(s);
	return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

int ferry_catalog_object_put(struct ferry_catalog *c, const struct ferry_id *id,
			     const struct ferry_loc *loc)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c,
			"INSERT OR IGNORE INTO objects (id, type, pack, offset, clen, plen) "
			"VALUES (?, ?, ?, ?, ?, ?)",
			&s);
	if (r < 0)
		return r;
	sqlite3_bind_blob(s, 1, id->b, FERRY_ID_SIZE, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, loc->type);
	sqlite3_bind_int64(s, 3, (int64_t)loc->pack);
	sqlite3_bind_int64(s, 4, (int64_t)loc->offset);
	sqlite3_bind_int64(s, 5, loc->clen);
	sqlite3_bind_int64(s, 6, loc->plen);
	return step_done(s);
}

int ferry_catalog_object_move(struct ferry_catalog *c, const struct ferry_id *id,
			      const struct ferry_loc *loc)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c,
			"INSERT OR REPLACE INTO objects (id, type, pack, offset, clen, plen) "
			"VALUES (?, ?, ?, ?, ?, ?)",
			&s);
	if (r < 0)
		return r;
	sqlite3_bind_blob(s, 1, id->b, FERRY_ID_SIZE, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, loc->type);
	sqlite3_bind_int64(s, 3, (int64_t)loc->pack);
	sqlite3_bind_int64(s, 4, (int64_t)loc->offset);
	sqlite3_bind_int64(s, 5, loc->clen);
	sqlite3_bind_int64(s, 6, loc->plen);
	return step_done(s);
}

int ferry_catalog_object_delete(struct ferry_catalog *c, const struct ferry_id *id)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "DELETE FROM objects WHERE id = ?", &s);
	if (r < 0)
		return r;
	sqlite3_bind_blob(s, 1, id->b, FERRY_ID_SIZE, SQLITE_STATIC);
	return step_done(s);
}

struct object_ctx {
	int (*cb)(const struct ferry_id *id, const struct ferry_loc *loc, void *userdata);
	void *userdata;
};

static int object_row(sqlite3_stmt *s, void *ctx)
{
	struct object_ctx *oc = ctx;
	struct ferry_id id;
	struct ferry_loc loc;
	if (sqlite3_column_bytes(s, 0) != FERRY_ID_SIZE)
		return -EBADMSG;
	memcpy(id.b, sqlite3_column_blob(s, 0), FERRY_ID_SIZE);
	loc_from_row(s, 1, &loc);
	return oc->cb(&id, &loc, oc->userdata);
}

int ferry_catalog_object_list(struct ferry_catalog *c,
			      int (*cb)(const struct ferry_id *id, const struct ferry_loc *loc,
					void *userdata),
			      void *userdata)
{
	struct object_ctx ctx = { cb, userdata };
	return for_each_row(c,
			    "SELECT id, type, pack, offset, clen, plen FROM objects "
			    "ORDER BY pack, offset",
			    0, object_row, &ctx);
}

int ferry_catalog_object_list_pack(struct ferry_catalog *c, uint64_t pack,
				   int (*cb)(const struct ferry_id *id, const struct ferry_loc *loc,
					     void *userdata),
				   void *userdata)
{
	struct object_ctx ctx = { cb, userdata };
	return for_each_row(
		c,
		"SELECT id, type, pack, offset, clen, plen FROM objects WHERE pack = ?1 "
		"ORDER BY offset",
		(int64_t)pack, object_row, &ctx);
}

int ferry_catalog_pack_add(struct ferry_catalog *c, uint64_t pack, uint64_t size, uint32_t count,
			   uint64_t gen)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c,
			"INSERT OR IGNORE INTO packs (id, size, count, created_ns, gen) "
			"VALUES (?, ?, ?, ?, ?)",
			&s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, (int64_t)pack);
	sqlite3_bind_int64(s, 2, (int64_t)size);
	sqlite3_bind_int64(s, 3, count);
	sqlite3_bind_int64(s, 4, ferry_now_ns());
	sqlite3_bind_int64(s, 5, (int64_t)gen);
	return step_done(s);
}

int ferry_catalog_pack_delete(struct ferry_catalog *c, uint64_t pack)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "DELETE FROM objects WHERE pack = ?", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, (int64_t)pack);
	r = step_done(s);
	if (r < 0)
		return r;
	r = prepare(c, "DELETE FROM packs WHERE id = ?", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, (int64_t)pack);
	return step_done(s);
}

struct pack_ctx {
	int (*cb)(uint64_t pack, uint64_t size, uint32_t count, void *userdata);
	void *userdata;
};

static int pack_row(sqlite3_stmt *s, void *ctx)
{
	struct pack_ctx *pc = ctx;
	return pc->cb((uint64_t)sqlite3_column_int64(s, 0), (uint64_t)sqlite3_column_int64(s, 1),
		      (uint32_t)sqlite3_column_int64(s, 2), pc->userdata);
}

int ferry_catalog_pack_list(struct ferry_catalog *c,
			    int (*cb)(uint64_t pack, uint64_t size, uint32_t count, void *userdata),
			    void *userdata)
{
	struct pack_ctx ctx = { cb, userdata };
	return for_each_row(c, "SELECT id, size, count FROM packs ORDER BY id", 0, pack_row, &ctx);
}

int ferry_catalog_store_bytes(struct ferry_catalog *c, uint64_t *ret)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "SELECT COALESCE(SUM(size), 0) FROM packs", &s);
	if (r < 0)
		return r;
	r = step_row(s);
	if (r == 1)
		*ret = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return r < 0 ? r : r == 0 ? -EIO : 0;
}

int ferry_catalog_store_stats(struct ferry_catalog *c, struct ferry_catalog_store_stats *ret)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c,
			"SELECT (SELECT COUNT(*) FROM objects), "
			"(SELECT COALESCE(SUM(plen), 0) FROM objects), "
			"(SELECT COALESCE(SUM(size), 0) FROM point_disks) + "
			"(SELECT COALESCE(SUM(size), 0) FROM disks)",
			&s);
	if (r < 0)
		return r;
	r = step_row(s);
	if (r == 1)
		*ret = (struct ferry_catalog_store_stats){
			.objects = (uint64_t)sqlite3_column_int64(s, 0),
			.unique_bytes = (uint64_t)sqlite3_column_int64(s, 1),
			.logical_bytes = (uint64_t)sqlite3_column_int64(s, 2),
		};
	sqlite3_reset(s);
	return r < 0 ? r : r == 0 ? -EIO : 0;
}

int ferry_catalog_gen_next(struct ferry_catalog *c, uint64_t *ret)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "UPDATE counters SET value = value + 1 WHERE name = 'gen'", &s);
	if (r < 0)
		return r;
	r = step_done(s);
	return r < 0 ? r : ferry_catalog_gen_current(c, ret);
}

int ferry_catalog_gen_current(struct ferry_catalog *c, uint64_t *ret)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "SELECT value FROM counters WHERE name = 'gen'", &s);
	if (r < 0)
		return r;
	r = step_row(s);
	if (r == 1)
		*ret = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return r < 0 ? r : r == 0 ? -EBADMSG : 0;
}

int ferry_catalog_pack_touch(struct ferry_catalog *c, uint64_t pack, uint64_t gen)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "UPDATE packs SET gen = ?2 WHERE id = ?1", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, (int64_t)pack);
	sqlite3_bind_int64(s, 2, (int64_t)gen);
	r = step_done(s);
	if (r < 0)
		return r;
	return sqlite3_changes(c->db) == 1 ? 0 : -ENOENT;
}

int ferry_catalog_pack_gen(struct ferry_catalog *c, uint64_t pack, uint64_t *ret)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "SELECT gen FROM packs WHERE id = ?", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, (int64_t)pack);
	r = step_row(s);
	if (r == 1)
		*ret = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

int ferry_catalog_pack_claim(struct ferry_catalog *c, uint64_t pack, int64_t *ret_intent_ns,
			     char *owner, size_t ownersize)
{
	sqlite3_stmt *s = NULL;
	/* One statement, so one snapshot: a writer that records its pack and
	 * drops its intent in one transaction is seen on one side of it. */
	int r = prepare(c,
			"SELECT EXISTS (SELECT 1 FROM packs WHERE id = ?1), "
			"(SELECT created_ns FROM pack_intents WHERE pack = ?1), "
			"(SELECT owner FROM pack_intents WHERE pack = ?1)",
			&s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, (int64_t)pack);
	r = step_row(s);
	int known = 0, intent = 0;
	if (r == 1) {
		known = sqlite3_column_int(s, 0);
		intent = sqlite3_column_type(s, 1) != SQLITE_NULL;
		if (intent) {
			*ret_intent_ns = sqlite3_column_int64(s, 1);
			const unsigned char *o = sqlite3_column_text(s, 2);
			snprintf(owner, ownersize, "%s", o ? (const char *)o : "");
		}
	}
	sqlite3_reset(s);
	if (r < 0)
		return r;
	if (r == 0)
		return -EIO;
	return known ? 1 : intent ? 2 : 0;
}

/* ---- events ---- */

int ferry_catalog_event_add(struct ferry_catalog *c, int64_t vm_id, const char *level,
			    const char *message)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(
		c, "INSERT INTO events (time_ns, vm_id, level, message) VALUES (?, ?, ?, ?)", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, ferry_now_ns());
	if (vm_id > 0)
		sqlite3_bind_int64(s, 2, vm_id);
	else
		sqlite3_bind_null(s, 2);
	sqlite3_bind_text(s, 3, level, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, message, -1, SQLITE_STATIC);
	return step_done(s);
}

struct event_ctx {
	int (*cb)(int64_t time_ns, const char *level, const char *message, void *userdata);
	void *userdata;
};

static int event_row(sqlite3_stmt *s, void *ctx)
{
	struct event_ctx *ec = ctx;
	return ec->cb(sqlite3_column_int64(s, 0), (const char *)sqlite3_column_text(s, 1),
		      (const char *)sqlite3_column_text(s, 2), ec->userdata);
}

int ferry_catalog_event_list(struct ferry_catalog *c, int64_t vm_id, unsigned limit,
			     int (*cb)(int64_t time_ns, const char *level, const char *message,
				       void *userdata),
			     void *userdata)
{
	char sql[256];
	/* limit is a number we format ourselves; vm_id stays a parameter. */
	snprintf(sql, sizeof(sql),
		 "SELECT time_ns, level, message FROM (SELECT id, time_ns, level, message "
		 "FROM events WHERE vm_id IS ?1 OR ?1 <= 0 ORDER BY id DESC LIMIT %u) ORDER BY id",
		 limit);
	struct event_ctx ctx = { cb, userdata };
	return for_each_row(c, sql, vm_id, event_row, &ctx);
}

int ferry_catalog_generation(struct ferry_catalog *c, uint64_t *ret)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "PRAGMA data_version", &s);
	if (r < 0)
		return r;
	r = step_row(s);
	if (r == 1)
		*ret = ((uint64_t)sqlite3_column_int64(s, 0) << 20) + c->local_commits;
	sqlite3_reset(s);
	return r < 0 ? r : r == 0 ? -EIO : 0;
}

/* ---- failovers and clones ---- */

#define FAILOVER_COLUMNS                                                                         \
	"id, vm_id, name, kind, state, point_name, point_time_ns, network, subnet, created_ns, " \
	"accel"

static void failover_from_row(sqlite3_stmt *s, struct ferry_failover *f)
{
	memset(f, 0, sizeof(*f));
	f->id = sqlite3_column_int64(s, 0);
	f->vm_id = sqlite3_column_int64(s, 1);
	column_text(s, 2, f->name, sizeof(f->name));
	f->kind = (enum ferry_failover_kind)sqlite3_column_int(s, 3);
	f->state = (enum ferry_failover_state)sqlite3_column_int(s, 4);
	column_text(s, 5, f->point_name, sizeof(f->point_name));
	f->point_time_ns = sqlite3_column_int64(s, 6);
	column_text(s, 7, f->network, sizeof(f->network));
	column_text(s, 8, f->subnet, sizeof(f->subnet));
	f->created_ns = sqlite3_column_int64(s, 9);
	column_text(s, 10, f->accel, sizeof(f->accel));
}

int ferry_catalog_failover_add(struct ferry_catalog *c, struct ferry_failover *f,
			       const struct ferry_clone_disk *disks, size_t ndisks)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c,
			"INSERT INTO failovers (vm_id, name, kind, state, point_name, "
			"point_time_ns, network, subnet, created_ns, accel) "
			"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
			&s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, f->vm_id);
	sqlite3_bind_text(s, 2, f->name, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 3, f->kind);
	sqlite3_bind_int(s, 4, f->state);
	sqlite3_bind_text(s, 5, f->point_name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 6, f->point_time_ns);
	sqlite3_bind_text(s, 7, f->network, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 8, f->subnet, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 9, f->created_ns);
	sqlite3_bind_text(s, 10, f->accel, -1, SQLITE_STATIC);
	r = step_done(s);
	if (r < 0)
		return r;
	int64_t id = sqlite3_last_insert_rowid(c->db);
	r = prepare(c,
		    "INSERT INTO clone_disks (failover_id, idx, name, size, base_root, root) "
		    "VALUES (?, ?, ?, ?, ?, ?)",
		    &s);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ndisks; i++) {
		sqlite3_bind_int64(s, 1, id);
		sqlite3_bind_int(s, 2, disks[i].idx);
		sqlite3_bind_text(s, 3, disks[i].name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 4, (int64_t)disks[i].size);
		sqlite3_bind_blob(s, 5, disks[i].base_root.b, FERRY_ID_SIZE, SQLITE_STATIC);
		sqlite3_bind_blob(s, 6, disks[i].root.b, FERRY_ID_SIZE, SQLITE_STATIC);
		r = step_done(s);
		if (r < 0)
			return r;
	}
	f->id = id;
	return 0;
}

int ferry_catalog_failover_get(struct ferry_catalog *c, int64_t vm_id, const char *name,
			       struct ferry_failover *ret)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(
		c, "SELECT " FAILOVER_COLUMNS " FROM failovers WHERE vm_id = ? AND name = ?", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, vm_id);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	r = step_row(s);
	if (r == 1)
		failover_from_row(s, ret);
	sqlite3_reset(s);
	return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

int ferry_catalog_failover_update(struct ferry_catalog *c, const struct ferry_failover *f)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c,
			"UPDATE failovers SET state = ?, point_name = ?, point_time_ns = ?, "
			"network = ?, subnet = ? WHERE id = ?",
			&s);
	if (r < 0)
		return r;
	sqlite3_bind_int(s, 1, f->state);
	sqlite3_bind_text(s, 2, f->point_name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, f->point_time_ns);
	sqlite3_bind_text(s, 4, f->network, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 5, f->subnet, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 6, f->id);
	r = step_done(s);
	if (r < 0)
		return r;
	return sqlite3_changes(c->db) == 1 ? 0 : -ENOENT;
}

int ferry_catalog_failover_delete(struct ferry_catalog *c, int64_t failover_id)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "DELETE FROM failovers WHERE id = ?", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, failover_id);
	r = step_done(s);
	if (r < 0)
		return r;
	return sqlite3_changes(c->db) == 1 ? 0 : -ENOENT;
}

struct failover_ctx {
	int (*cb)(const struct ferry_failover *f, void *userdata);
	void *userdata;
};

static int failover_row(sqlite3_stmt *s, void *ctx)
{
	struct failover_ctx *fc = ctx;
	struct ferry_failover f;
	failover_from_row(s, &f);
	return fc->cb(&f, fc->userdata);
}

int ferry_catalog_failover_list(struct ferry_catalog *c, int64_t vm_id,
				int (*cb)(const struct ferry_failover *f, void *userdata),
				void *userdata)
{
	struct failover_ctx ctx = { cb, userdata };
	return for_each_row(c,
			    "SELECT " FAILOVER_COLUMNS
			    " FROM failovers WHERE vm_id = ? ORDER BY id",
			    vm_id, failover_row, &ctx);
}

struct clone_ctx {
	int (*cb)(const struct ferry_clone_disk *d, void *userdata);
	void *userdata;
};

static int clone_row(sqlite3_stmt *s, void *ctx)
{
	struct clone_ctx *cc = ctx;
	struct ferry_clone_disk d = { 0 };
	d.failover_id = sqlite3_column_int64(s, 0);
	d.idx = (uint16_t)sqlite3_column_int(s, 1);
	column_text(s, 2, d.name, sizeof(d.name));
	d.size = (uint64_t)sqlite3_column_int64(s, 3);
	int r = column_id(s, 4, &d.base_root);
	if (r >= 0)
		r = column_id(s, 5, &d.root);
	return r < 0 ? r : cc->cb(&d, cc->userdata);
}

int ferry_catalog_clone_disks(struct ferry_catalog *c, int64_t failover_id,
			      int (*cb)(const struct ferry_clone_disk *d, void *userdata),
			      void *userdata)
{
	struct clone_ctx ctx = { cb, userdata };
	return for_each_row(c,
			    "SELECT failover_id, idx, name, size, base_root, root FROM clone_disks "
			    "WHERE failover_id = ? ORDER BY idx",
			    failover_id, clone_row, &ctx);
}

int ferry_catalog_clone_disk_set_root(struct ferry_catalog *c, int64_t failover_id, uint16_t idx,
				      const struct ferry_id *root)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "UPDATE clone_disks SET root = ? WHERE failover_id = ? AND idx = ?", &s);
	if (r < 0)
		return r;
	sqlite3_bind_blob(s, 1, root->b, FERRY_ID_SIZE, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, failover_id);
	sqlite3_bind_int(s, 3, idx);
	r = step_done(s);
	if (r < 0)
		return r;
	return sqlite3_changes(c->db) == 1 ? 0 : -ENOENT;
}

/* ---- pack intents ---- */

int ferry_catalog_pack_intent_add(struct ferry_catalog *c, uint64_t pack, const char *owner)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(
		c, "INSERT OR REPLACE INTO pack_intents (pack, created_ns, owner) VALUES (?, ?, ?)",
		&s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, (int64_t)pack);
	sqlite3_bind_int64(s, 2, ferry_now_ns());
	sqlite3_bind_text(s, 3, owner, -1, SQLITE_STATIC);
	return step_done(s);
}

int ferry_catalog_pack_intent_delete(struct ferry_catalog *c, uint64_t pack)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c, "DELETE FROM pack_intents WHERE pack = ?", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, (int64_t)pack);
	return step_done(s);
}

/* ---- jobs ---- */

int ferry_catalog_job_add(struct ferry_catalog *c, int64_t vm_id, const char *kind,
			  const char *state, const char *detail, int64_t *ret_id)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c,
			"INSERT INTO jobs (vm_id, kind, state, started_ns, detail) "
			"VALUES (?, ?, ?, ?, ?)",
			&s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, vm_id);
	sqlite3_bind_text(s, 2, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, state, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, ferry_now_ns());
	sqlite3_bind_text(s, 5, detail, -1, SQLITE_STATIC);
	r = step_done(s);
	if (r >= 0 && ret_id)
		*ret_id = sqlite3_last_insert_rowid(c->db);
	return r;
}

struct job_ctx {
	int (*cb)(const struct ferry_job *j, void *userdata);
	void *userdata;
};

static int job_row(sqlite3_stmt *s, void *ctx)
{
	struct job_ctx *jc = ctx;
	struct ferry_job j = { 0 };
	j.id = sqlite3_column_int64(s, 0);
	column_text(s, 1, j.vm, sizeof(j.vm));
	column_text(s, 2, j.kind, sizeof(j.kind));
	column_text(s, 3, j.state, sizeof(j.state));
	j.started_ns = sqlite3_column_int64(s, 4);
	j.ended_ns = sqlite3_column_int64(s, 5);
	column_text(s, 6, j.detail, sizeof(j.detail));
	return jc->cb(&j, jc->userdata);
}

int ferry_catalog_job_list(struct ferry_catalog *c,
			   int (*cb)(const struct ferry_job *j, void *userdata), void *userdata)
{
	struct job_ctx ctx = { cb, userdata };
	return for_each_row(c,
			    "SELECT jobs.id, COALESCE(vms.name, ''), kind, jobs.state, started_ns, "
			    "ended_ns, detail FROM jobs LEFT JOIN vms ON vms.id = jobs.vm_id "
			    "ORDER BY jobs.id",
			    0, job_row, &ctx);
}

/* ---- resyncs ---- */

int ferry_catalog_resync_get(struct ferry_catalog *c, int64_t vm_id, struct ferry_vm_resync *ret)
{
	/* A read-only opener of an older catalog has no such table (and no
	 * resync ever happened in it). */
	int version;
	int r = user_version(c, &version);
	if (r < 0)
		return r;
	if (version < 3)
		return -ENOENT;
	sqlite3_stmt *s = NULL;
	r = prepare(c,
		    "SELECT epoch, base_seq, base_digest, requested_ns, done_ns, reason "
		    "FROM resyncs WHERE vm_id = ?",
		    &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, vm_id);
	r = step_row(s);
	if (r == 1) {
		struct ferry_vm_resync rs = { .vm_id = vm_id };
		rs.epoch = (uint64_t)sqlite3_column_int64(s, 0);
		rs.base_seq = (uint64_t)sqlite3_column_int64(s, 1);
		r = column_id(s, 2, &rs.base_digest);
		rs.requested_ns = sqlite3_column_int64(s, 3);
		rs.done_ns = sqlite3_column_int64(s, 4);
		column_text(s, 5, rs.reason, sizeof(rs.reason));
		if (r >= 0)
			*ret = rs;
		r = r < 0 ? r : 1;
	}
	sqlite3_reset(s);
	return r < 0 ? r : r == 0 ? -ENOENT : 0;
}

int ferry_catalog_resync_set(struct ferry_catalog *c, const struct ferry_vm_resync *rs)
{
	sqlite3_stmt *s = NULL;
	int r = prepare(c,
			"INSERT OR REPLACE INTO resyncs (vm_id, epoch, base_seq, base_digest, "
			"requested_ns, done_ns, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
			&s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, rs->vm_id);
	sqlite3_bind_int64(s, 2, (int64_t)rs->epoch);
	sqlite3_bind_int64(s, 3, (int64_t)rs->base_seq);
	sqlite3_bind_blob(s, 4, rs->base_digest.b, FERRY_ID_SIZE, SQLITE_TRANSIENT);
	sqlite3_bind_int64(s, 5, rs->requested_ns);
	sqlite3_bind_int64(s, 6, rs->done_ns);
	sqlite3_bind_text(s, 7, rs->reason, -1, SQLITE_STATIC);
	return step_done(s);
}
