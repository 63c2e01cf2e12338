/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A vault: a directory holding the catalog (catalog.db) and, by default,
 * the store (store/) and the embedded cache (cache/). This module ties
 * catalog and store together for the read path: it resolves object ids to
 * locations and reads verified objects, under one lock, so ferryfs threads
 * can share a vault.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ferry/catalog.h"
#include "ferry/map.h"
#include "ferry/store.h"

struct ferry_vault;

/* Creates DIR (must be empty or absent), its catalog and store. store_url
 * NULL means DIR/store. */
int ferry_vault_create(const char *dir, uint32_t chunk_size, const char *store_url);
int ferry_vault_open(const char *dir, int readonly, struct ferry_vault **ret);
struct ferry_vault *ferry_vault_free(struct ferry_vault *v);

const char *ferry_vault_dir(const struct ferry_vault *v);
uint32_t ferry_vault_chunk_size(const struct ferry_vault *v);
/* Direct access for writers (replicator, CLI). Callers that share the vault
 * between threads take ferry_vault_lock() around catalog use. */
struct ferry_catalog *ferry_vault_catalog(struct ferry_vault *v);
struct ferry_store *ferry_vault_store(struct ferry_vault *v);
void ferry_vault_lock(struct ferry_vault *v);
void ferry_vault_unlock(struct ferry_vault *v);

/* Reads object id (any type) into a new buffer, verified. Thread-safe. */
int ferry_vault_read_object(struct ferry_vault *v, const struct ferry_id *id, void **ret_buf,
			    size_t *ret_len);
/* An objsrc whose get reads map nodes through the vault (thread-safe) and
 * whose put fails with -EROFS: for readers. */
const struct ferry_objsrc *ferry_vault_objsrc(struct ferry_vault *v);
