#ifndef MTLCPU_PREFETCH_H
#define MTLCPU_PREFETCH_H

#include <stdint.h>

/* A list of rows a later sparse optimizer update will touch (the batch's
 * ids of a table, for the table and each of its optimizer-state tensors),
 * requested with software prefetches at a fixed pace while compute-bound
 * GEMMs run (kernels.RowPrefetch). A unit is one row of one stream: unit u
 * is row ids[u - first] of the stream that holds it, streams in order. */
typedef struct {
	const char *base;   /* row 0 of the tensor */
	const int32_t *ids; /* the rows to request */
	long n;             /* number of ids */
	long rows;          /* the tensor's rows: ids outside [0, rows) are skipped */
	long stride;        /* bytes from one row to the next */
	long bytes;         /* bytes of a row (> 0) */
} mtlcpu_pf_stream;

/* The part of a list one GEMM call issues: units [next, end), spread
 * evenly over the call's work (work multiply-adds in all), a tile's share
 * after each tile. */
typedef struct {
	const mtlcpu_pf_stream *s;
	int ns;
	long next, end;
	long units;       /* end - next at the start */
	long work, credit; /* credit: work done * units, less work per unit issued */
	long lines;       /* cache lines requested so far */
} mtlcpu_pf_span;

/* Issues the units of the span that work more multiply-adds pay for. */
void mtlcpu_pf_pay(mtlcpu_pf_span *p, long work);
/* Issues every unit left in the span. */
void mtlcpu_pf_flush(mtlcpu_pf_span *p);
/* Issues units [lo, hi) of streams s at once; returns the lines requested
 * (tests, and a list's remainder). */
long mtlcpu_pf_issue(const mtlcpu_pf_stream *s, int ns, long lo, long hi);

/* The addresses mtlcpu_pf_issue would request, written to rec (room for
 * every line of the units; tests); returns how many. */
long mtlcpu_pf_record(const mtlcpu_pf_stream *s, int ns, long lo, long hi, const char **rec);

/* The GEMMs of cpu_gemm.c with the span [lo, hi) of a prefetch list (s NULL
 * or lo >= hi: none) spread over their work (m*n*k): they return the lines
 * requested, or -1 - lines where mtlcpu_sgemm / mtlcpu_sgemm_actgrad
 * return 0 (a shape they do not take; the span is issued at once). */
long mtlcpu_sgemm_pf(int ta, int tb, long m, long n, long k, float alpha, const float *a, long lda, const float *b,
                     long ldb, float beta, float *c, long ldc, const float *bias, int relu, const mtlcpu_pf_stream *s,
                     int ns, long lo, long hi);
long mtlcpu_sgemm_actgrad_pf(int tb, long m, long n, long k, const float *a, long lda, const float *b, long ldb,
                             float *c, long ldc, const float *y, long ldy, float *db, const mtlcpu_pf_stream *s, int ns,
                             long lo, long hi);

#endif
