/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for the record decoders (records.h). Any input must be
 * refused cleanly or decode to a record whose encoding decodes again to the
 * same encoding: the encoder's output is the canonical form.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/records.h"
#include "ferry/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ROUND_TRIP(kind, type)                                                     \
	do {                                                                       \
		struct ferry_record_##kind a;                                      \
		if (ferry_record_##kind##_decode(data, size, &a) != 0)             \
			break;                                                     \
		char *e1 = NULL, *e2 = NULL;                                       \
		size_t l1, l2;                                                     \
		if (ferry_record_##kind##_encode(&a, &e1, &l1) != 0)               \
			abort();                                                   \
		struct ferry_record_##kind b;                                      \
		if (ferry_record_##kind##_decode(e1, l1, &b) != 0)                 \
			abort();                                                   \
		if (ferry_record_##kind##_encode(&b, &e2, &l2) != 0 || l1 != l2 || \
		    memcmp(e1, e2, l1) != 0)                                       \
			abort();                                                   \
		enum ferry_obj_type k;                                             \
		if (ferry_record_kind(e1, l1, &k) != 0 || k != (type))             \
			abort();                                                   \
		free(e1);                                                          \
		free(e2);                                                          \
		done_##kind(&a);                                                   \
		done_##kind(&b);                                                   \
	} while (0)

static void done_vault(struct ferry_record_vault *r)
{
	(void)r;
}
static void done_vm(struct ferry_record_vm *r)
{
	ferry_record_vm_done(r);
}
static void done_state(struct ferry_record_state *r)
{
	ferry_record_state_done(r);
}
static void done_point(struct ferry_record_point *r)
{
	ferry_record_point_done(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum ferry_obj_type t;
	(void)ferry_record_kind(data, size, &t);
	ROUND_TRIP(vault, FERRY_OBJ_VAULT);
	ROUND_TRIP(vm, FERRY_OBJ_VM);
	ROUND_TRIP(state, FERRY_OBJ_STATE);
	ROUND_TRIP(point, FERRY_OBJ_POINT);
	return 0;
}
