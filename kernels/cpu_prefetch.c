/* Paced prefetches of a sparse update's rows (cpu_prefetch.h). */
#include "cpu_prefetch.h"

/* Volatile asm on x86-64, as the sparse kernels' PREFETCH_W
 * (cpu_kernels.c): a pass of GCC may delete __builtin_prefetch calls. */
#if defined(__x86_64__) && defined(__GNUC__)
#define PF_LINE(p) __asm__ volatile("prefetcht1 %0" : : "m"(*(const char *)(p)))
#else
#define PF_LINE(p) __builtin_prefetch((p), 1, 2)
#endif

/* Requests every cache line of row i of stream s (with rec set, writes
 * their addresses to rec instead); returns how many. Only addresses inside
 * the row are formed: its first byte, then each line boundary before its
 * end. */
static inline __attribute__((always_inline)) long pf_row(const mtlcpu_pf_stream *s, long i, const char **rec) {
	long id = s->ids[i];
	if (id < 0 || id >= s->rows) return 0;
	const char *p = s->base + id * s->stride;
	uintptr_t a = (uintptr_t)p, e = a + (uintptr_t)s->bytes;
	long n = 0;
	for (uintptr_t q = a; q < e; q = (q | 63) + 1, n++) {
		if (rec)
			rec[n] = p + (q - a);
		else
			PF_LINE(p + (q - a));
	}
	return n;
}

static inline __attribute__((always_inline)) long pf_units(const mtlcpu_pf_stream *s, int ns, long lo, long hi,
                                                           const char **rec) {
	long lines = 0, first = 0;
	for (int k = 0; k < ns && lo < hi; k++) {
		long end = first + s[k].n;
		for (; lo < hi && lo < end; lo++) lines += pf_row(&s[k], lo - first, rec ? rec + lines : 0);
		first = end;
	}
	return lines;
}

long mtlcpu_pf_issue(const mtlcpu_pf_stream *s, int ns, long lo, long hi) { return pf_units(s, ns, lo, hi, 0); }

long mtlcpu_pf_record(const mtlcpu_pf_stream *s, int ns, long lo, long hi, const char **rec) {
	return pf_units(s, ns, lo, hi, rec);
}

void mtlcpu_pf_pay(mtlcpu_pf_span *p, long work) {
	p->credit += work * p->units;
	if (p->credit < p->work || p->next >= p->end) return;
	long n = p->credit / p->work;
	if (n > p->end - p->next) n = p->end - p->next;
	p->credit -= n * p->work;
	p->lines += mtlcpu_pf_issue(p->s, p->ns, p->next, p->next + n);
	p->next += n;
}

void mtlcpu_pf_flush(mtlcpu_pf_span *p) {
	if (p->next < p->end) p->lines += mtlcpu_pf_issue(p->s, p->ns, p->next, p->end);
	p->next = p->end;
}
