/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A replication pass over one VM (see replicate.c). The caller holds the
 * vault's writer lock.
 */
#pragma once

#include <signal.h>

#include "ferry/vault.h"

/* Applies the waiting segments of vm. Returns how many were applied, or
 * -errno at the first segment that cannot be (it stays in the cache and the
 * VM is marked in error). Stops early once *stop is set (stop may be NULL). */
int replicate_vm(struct ferry_vault *v, const struct ferry_vm *vm,
		 const volatile sig_atomic_t *stop);
