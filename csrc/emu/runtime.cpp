// runtime.cpp - the emulated CUDA runtime behind mtlemu.h: device memory,
// streams, events, graphs and the SIMT scheduler that runs kernels.
//
// Device memory. Allocations come from one reserved arena. Each allocation
// gets whole pages and ends, right-aligned to 16 bytes, at a guard page that
// is never accessible; the bytes between the page start and the allocation
// and the up-to-15 bytes after its end hold a canary checked when it is
// freed. Every page of the arena is PROT_NONE while no device operation
// touches it: a device operation (kernel, copy, memset, cuBLAS or CUB call,
// all run by the stream threads) that touches an allocation faults once, the
// SIGSEGV handler sees a stream thread and a live allocation and opens that
// allocation until the operation ends. Any other fault in the arena is a
// defect: a stream thread on a guard page or freed memory is an
// out-of-bounds access (reported with kernel, block and thread; the launch
// fails with cudaErrorIllegalAddress, sticky as on a GPU), a host thread
// reading device memory is a host dereference of a device address (reported,
// then abort). The handler is installed by a constructor, before the Go
// runtime starts, so that the Go runtime forwards it the faults of non-Go
// code (cgo calls and threads Go does not know) and keeps its own for Go code.
//
// Kernels. The blocks of a launch run one after the other, in a seeded
// random order, on the stream's thread; the threads of a block are fibers,
// resumed in a seeded random order whenever they reach a barrier, a warp
// collective, an atomic or a fence (MTLCUDA_EMU_SEED; the seed is printed
// with every failure and when a context is created).
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csetjmp>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "cublas_v2.h"
#include "cub/cub.cuh"
#include "emu_internal.h"

namespace mtlemu {

// ---------------------------------------------------------------- config

static uint64_t env_u64(const char *name, uint64_t def) {
	const char *v = getenv(name);
	if (!v || !*v) return def;
	char *end = nullptr;
	unsigned long long x = strtoull(v, &end, 0);
	return end && *end == 0 ? (uint64_t)x : def;
}

static uint64_t g_seed;
static int g_sms = 2;
static size_t g_total_mem;

uint64_t seed() { return g_seed; }

static void config_init() {
	uint64_t s = env_u64("MTLCUDA_EMU_SEED", 0);
	if (s == 0) {
		s = (uint64_t)std::chrono::steady_clock::now().time_since_epoch().count() ^ ((uint64_t)getpid() << 32);
		s = s % 1000000007ull + 1;
	}
	g_seed = s;
	g_sms = (int)env_u64("MTLCUDA_EMU_SMS", 2);
	if (g_sms < 1) g_sms = 1;
	g_total_mem = (size_t)env_u64("MTLCUDA_EMU_MEMORY_MB", 4096) << 20;
}

static int device_count() { return (int)env_u64("MTLCUDA_EMU_DEVICES", 1); }

// ---------------------------------------------------------------- errors

static thread_local cudaError_t tls_last = cudaSuccess;
static std::atomic<int> g_sticky{cudaSuccess};
static char g_sticky_msg[2048];

static cudaError_t set_last(cudaError_t e) {
	if (e != cudaSuccess) tls_last = e;
	return e;
}

static cudaError_t sticky() { return (cudaError_t)g_sticky.load(); }

// Reports a device fault: stderr, and the sticky error every later call
// returns (the message is part of cudaGetErrorString's text).
void device_fault(cudaError_t e, const char *fmt, ...) {
	char buf[1536];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	int expected = cudaSuccess;
	if (g_sticky.compare_exchange_strong(expected, e))
		snprintf(g_sticky_msg, sizeof g_sticky_msg, "%s [emulated device, MTLCUDA_EMU_SEED=%llu]", buf,
		         (unsigned long long)g_seed);
	fprintf(stderr, "mtlcuda-emu: %s (MTLCUDA_EMU_SEED=%llu)\n", buf, (unsigned long long)g_seed);
}

// ---------------------------------------------------------------- memory arena

static const size_t kPage = 4096;
static const size_t kArenaBytes = (size_t)1 << 38; // 256 GiB of address space
static const size_t kMaxAllocs = 1 << 20;
static const uint8_t kCanary = 0xA5;

struct Alloc {
	uintptr_t ptr;   // the address handed out
	size_t bytes;    // requested size
	uintptr_t map;   // first data page
	size_t pages;    // data pages (a guard page follows)
	bool pool;       // from cudaMallocAsync
	std::atomic<int> state; // 0 free slot, 1 live, 2 freed (quarantined)
	std::atomic<int> open;  // accessible to the device right now
};

static char *g_arena;
static size_t g_arena_pages;
static std::atomic<uint32_t> *g_owner; // per arena page: slot+1 (data), |kGuard (guard page)
static const uint32_t kGuard = 0x80000000u;
static Alloc *g_allocs;
static std::mutex g_mem_mu;
static std::vector<uint32_t> g_free_slots;
static uint32_t g_next_slot;
static size_t g_bump;                                   // pages handed out from the arena start
static std::multimap<size_t, size_t> g_free_ranges;     // pages -> first page (data + guard)
static std::deque<uint32_t> g_quarantine;
static size_t g_live_bytes, g_pool_used, g_pool_reserved;
static std::map<uintptr_t, size_t> g_pinned; // pinned host blocks

// Allocations opened for the device since the last close.
static std::atomic_flag g_open_lock = ATOMIC_FLAG_INIT;
static uint32_t g_opened[65536];
static std::atomic<int> g_nopened{0};

static thread_local bool tls_device = false; // a stream thread running device work

static void arena_init() {
	void *p = mmap(nullptr, kArenaBytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		fprintf(stderr, "mtlcuda-emu: cannot reserve the device arena: %s\n", strerror(errno));
		abort();
	}
	g_arena = (char *)p;
	g_arena_pages = kArenaBytes / kPage;
	void *o = mmap(nullptr, g_arena_pages * sizeof(uint32_t), PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	void *a = mmap(nullptr, kMaxAllocs * sizeof(Alloc), PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (o == MAP_FAILED || a == MAP_FAILED) abort();
	g_owner = (std::atomic<uint32_t> *)o;
	g_allocs = (Alloc *)a;
}

static bool in_arena(uintptr_t a) { return a >= (uintptr_t)g_arena && a < (uintptr_t)g_arena + kArenaBytes; }

static void protect(const Alloc &al, int prot) {
	if (mprotect((void *)al.map, al.pages * kPage, prot) != 0) {
		fprintf(stderr, "mtlcuda-emu: mprotect: %s\n", strerror(errno));
		abort();
	}
}

static void lock_open() {
	while (g_open_lock.test_and_set(std::memory_order_acquire)) {
	}
}
static void unlock_open() { g_open_lock.clear(std::memory_order_release); }

// Opens allocation slot for the device (from the fault handler).
static void open_for_device(uint32_t slot) {
	Alloc &al = g_allocs[slot];
	lock_open();
	if (al.open.load() == 0) {
		protect(al, PROT_READ | PROT_WRITE);
		al.open.store(1);
		int n = g_nopened.load();
		if (n < (int)(sizeof g_opened / sizeof g_opened[0])) {
			g_opened[n] = slot;
			g_nopened.store(n + 1);
		}
	}
	unlock_open();
}

// Closes every allocation opened for the device (after each device
// operation); a device operation still running re-opens what it touches.
void close_device_memory() {
	if (g_nopened.load() == 0) return;
	lock_open();
	int n = g_nopened.load();
	for (int i = 0; i < n; i++) {
		Alloc &al = g_allocs[g_opened[i]];
		if (al.open.load() && al.state.load() == 1) protect(al, PROT_NONE);
		al.open.store(0);
	}
	g_nopened.store(0);
	unlock_open();
}

static bool check_canaries(const Alloc &al, char *what, size_t n) {
	const uint8_t *m = (const uint8_t *)al.map;
	size_t front = al.ptr - al.map;
	for (size_t i = 0; i < front; i++)
		if (m[i] != kCanary) {
			snprintf(what, n, "%zu bytes before its start", front - i);
			return false;
		}
	const uint8_t *end = (const uint8_t *)(al.ptr + al.bytes);
	const uint8_t *lim = (const uint8_t *)(al.map + al.pages * kPage);
	for (const uint8_t *q = end; q < lim; q++)
		if (*q != kCanary) {
			snprintf(what, n, "%zu bytes past its end", (size_t)(q - end) + 1);
			return false;
		}
	return true;
}

cudaError_t dev_alloc(void **out, size_t bytes, bool pool) {
	*out = nullptr;
	if (bytes == 0) return cudaSuccess;
	std::lock_guard<std::mutex> lk(g_mem_mu);
	if (bytes > g_total_mem || g_live_bytes + bytes > g_total_mem) return cudaErrorMemoryAllocation;
	size_t padded = (bytes + 15) & ~(size_t)15;
	size_t pages = (padded + kPage - 1) / kPage;
	size_t first;
	auto it = g_free_ranges.lower_bound(pages + 1);
	if (it != g_free_ranges.end() && it->first <= 2 * (pages + 1)) {
		first = it->second;
		size_t have = it->first;
		g_free_ranges.erase(it);
		if (have > pages + 1) g_free_ranges.emplace(have - pages - 1, first + pages + 1);
	} else {
		if (g_bump + pages + 1 > g_arena_pages) return cudaErrorMemoryAllocation;
		first = g_bump;
		g_bump += pages + 1;
	}
	uint32_t slot;
	if (!g_free_slots.empty()) {
		slot = g_free_slots.back();
		g_free_slots.pop_back();
	} else {
		if (g_next_slot >= kMaxAllocs) return cudaErrorMemoryAllocation;
		slot = g_next_slot++;
	}
	Alloc &al = g_allocs[slot];
	al.map = (uintptr_t)g_arena + first * kPage;
	al.pages = pages;
	al.ptr = al.map + pages * kPage - padded;
	al.bytes = bytes;
	al.pool = pool;
	al.open.store(0);
	protect(al, PROT_READ | PROT_WRITE);
	// Canary around the allocation; the allocation itself holds garbage
	// (all-ones: NaN as float32, -1 as int32) until written, as on a GPU.
	memset((void *)al.map, kCanary, al.ptr - al.map);
	memset((void *)al.ptr, 0xFF, bytes);
	memset((void *)(al.ptr + bytes), kCanary, padded - bytes);
	protect(al, PROT_NONE);
	for (size_t i = 0; i < pages; i++) g_owner[first + i].store(slot + 1);
	g_owner[first + pages].store((slot + 1) | kGuard);
	al.state.store(1);
	g_live_bytes += bytes;
	if (pool) {
		g_pool_used += bytes;
		if (g_pool_reserved < g_pool_used) g_pool_reserved = g_pool_used;
	}
	*out = (void *)al.ptr;
	return cudaSuccess;
}

// Finds the live allocation that starts at p.
static int find_alloc(const void *p, uint32_t *slot) {
	uintptr_t a = (uintptr_t)p;
	if (!in_arena(a)) return -1;
	uint32_t o = g_owner[(a - (uintptr_t)g_arena) / kPage].load();
	if (o == 0 || (o & kGuard)) return -1;
	Alloc &al = g_allocs[o - 1];
	if (al.state.load() != 1 || al.ptr != a) return -1;
	*slot = o - 1;
	return 0;
}

bool is_device_alloc(const void *p) {
	uint32_t s;
	std::lock_guard<std::mutex> lk(g_mem_mu);
	return find_alloc(p, &s) == 0;
}

// Whether [p, p+n) lies inside one live allocation.
bool device_range(const void *p, size_t n) {
	uintptr_t a = (uintptr_t)p;
	if (!in_arena(a)) return false;
	uint32_t o = g_owner[(a - (uintptr_t)g_arena) / kPage].load();
	if (o == 0 || (o & kGuard)) return false;
	const Alloc &al = g_allocs[o - 1];
	return al.state.load() == 1 && a >= al.ptr && a + n <= al.ptr + al.bytes;
}

cudaError_t dev_free(void *p, bool pool_expected) {
	(void)pool_expected;
	if (!p) return cudaSuccess;
	std::lock_guard<std::mutex> lk(g_mem_mu);
	uint32_t slot;
	if (find_alloc(p, &slot) != 0) return cudaErrorInvalidValue;
	Alloc &al = g_allocs[slot];
	lock_open();
	protect(al, PROT_READ | PROT_WRITE);
	char what[128];
	bool ok = check_canaries(al, what, sizeof what);
	// Freed memory stays inaccessible (quarantined) for a while: a later
	// access is reported as a use after free, not silently served.
	madvise((void *)al.map, al.pages * kPage, MADV_DONTNEED);
	protect(al, PROT_NONE);
	al.open.store(0);
	al.state.store(2);
	unlock_open();
	if (!ok)
		device_fault(cudaErrorIllegalAddress, "device memory corrupted: a write %s (allocation of %zu bytes at %p)",
		             what, al.bytes, (void *)al.ptr);
	g_live_bytes -= al.bytes;
	if (al.pool) g_pool_used -= al.bytes;
	g_quarantine.push_back(slot);
	while (g_quarantine.size() > 4096) {
		uint32_t s = g_quarantine.front();
		g_quarantine.pop_front();
		Alloc &q = g_allocs[s];
		size_t first = (q.map - (uintptr_t)g_arena) / kPage;
		for (size_t i = 0; i <= q.pages; i++) g_owner[first + i].store(0);
		g_free_ranges.emplace(q.pages + 1, first);
		q.state.store(0);
		g_free_slots.push_back(s);
	}
	return cudaSuccess;
}

// ---------------------------------------------------------------- fault handling

// Where the thread that runs device work is, for fault reports.
static thread_local const char *tls_op_name = nullptr;
static thread_local sigjmp_buf *tls_op_jmp = nullptr;
static thread_local char tls_fault_msg[1024];
static thread_local bool tls_faulted = false;

void describe_current(char *buf, size_t n); // kernel, block, thread (below)

static void fault_write(const char *s) {
	ssize_t r = write(2, s, strlen(s));
	(void)r;
}

static struct sigaction g_prev_segv;

static void segv_handler(int sig, siginfo_t *si, void *uctx) {
	uintptr_t a = (uintptr_t)si->si_addr;
	bool write_access = false;
#if defined(__x86_64__)
	write_access = (((ucontext_t *)uctx)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#endif
	if (g_arena && in_arena(a)) {
		size_t page = (a - (uintptr_t)g_arena) / kPage;
		uint32_t o = g_owner[page].load();
		if (tls_device && o != 0 && !(o & kGuard) && g_allocs[o - 1].state.load() == 1) {
			open_for_device(o - 1); // first touch by this device operation: retry
			return;
		}
		char where[512];
		describe_current(where, sizeof where);
		char what[256];
		if (o == 0) {
			snprintf(what, sizeof what, "unallocated device memory");
		} else {
			const Alloc &al = g_allocs[(o & ~kGuard) - 1];
			if (o & kGuard)
				snprintf(what, sizeof what, "%zu bytes past the end of an allocation of %zu bytes at %p",
				         (size_t)(a - (al.ptr + al.bytes)) + 1, al.bytes, (void *)al.ptr);
			else if (al.state.load() == 2)
				snprintf(what, sizeof what, "freed memory (an allocation of %zu bytes at %p)", al.bytes, (void *)al.ptr);
			else
				snprintf(what, sizeof what, "an allocation of %zu bytes at %p", al.bytes, (void *)al.ptr);
		}
		if (tls_device && tls_op_jmp) {
			snprintf(tls_fault_msg, sizeof tls_fault_msg, "%s: invalid %s of address %p: %s", where,
			         write_access ? "write" : "read", (void *)a, what);
			tls_faulted = true;
			siglongjmp(*tls_op_jmp, 1);
		}
		char msg[1024];
		snprintf(msg, sizeof msg,
		         "mtlcuda-emu: host code %s device address %p (%s): device memory is only accessible to the device; "
		         "copy it to the host first (MTLCUDA_EMU_SEED=%llu)\n",
		         write_access ? "wrote" : "read", (void *)a, what, (unsigned long long)g_seed);
		fault_write(msg);
		abort();
	}
	if (tls_device && tls_op_jmp) {
		char where[512];
		describe_current(where, sizeof where);
		snprintf(tls_fault_msg, sizeof tls_fault_msg, "%s: invalid %s of address %p (%s)", where,
		         write_access ? "write" : "read", (void *)a,
		         a < 65536 ? "null pointer" : "not device memory: a stack overflow or a wild pointer");
		tls_faulted = true;
		siglongjmp(*tls_op_jmp, 1);
	}
	// Not ours: hand it to whoever handled it before, else the default.
	if (g_prev_segv.sa_flags & SA_SIGINFO) {
		if (g_prev_segv.sa_sigaction) {
			g_prev_segv.sa_sigaction(sig, si, uctx);
			return;
		}
	} else if (g_prev_segv.sa_handler != SIG_DFL && g_prev_segv.sa_handler != SIG_IGN) {
		g_prev_segv.sa_handler(sig);
		return;
	}
	signal(sig, SIG_DFL); // the faulting instruction faults again and the default action applies
}

__attribute__((constructor)) static void emu_init() {
	config_init();
	arena_init();
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = segv_handler;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &g_prev_segv);
}

// ---------------------------------------------------------------- fibers

#if defined(__x86_64__)
extern "C" void mtlemu_switch(void **save_sp, void *load_sp);
asm(R"(
.text
.p2align 4
.globl mtlemu_switch
.hidden mtlemu_switch
.type mtlemu_switch,@function
mtlemu_switch:
	pushq %rbp
	pushq %rbx
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	subq $8, %rsp
	stmxcsr (%rsp)
	fnstcw 4(%rsp)
	movq %rsp, (%rdi)
	movq %rsi, %rsp
	ldmxcsr (%rsp)
	fldcw 4(%rsp)
	addq $8, %rsp
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %rbx
	popq %rbp
	ret
.size mtlemu_switch,.-mtlemu_switch
)");
#endif

// xorshift64*: the scheduler draws one number per fiber switch.
struct Rng {
	uint64_t s = 1;
	void seed(uint64_t v) { s = v ? v : 0x9E3779B97F4A7C15ull; }
	uint64_t operator()() {
		s ^= s >> 12;
		s ^= s << 25;
		s ^= s >> 27;
		return s * 0x2545F4914F6CDD1Dull;
	}
};

enum FiberState { F_RUN = 0, F_BAR = 1, F_WARP = 2, F_DONE = 3 };

struct Fiber {
	Thread t;
	int lane, warp, index;
	int state;
	uint64_t gen; // warp generation of the collective it waits in
#if defined(__x86_64__)
	void *sp;
#else
	ucontext_t uc;
#endif
	char *stack;
};

struct Warp {
	uint32_t arrived, mask, present;
	int at_bar; // lanes waiting at __syncthreads
	int kind; // 0 shfl idx, 1 shfl xor, 2 shfl down, 3 syncwarp
	uint64_t gen;
	uint64_t slots[2][32];
};

struct Block {
	const char *kernel;
	std::vector<uint64_t> dyn; // dynamic shared memory
	const Body *body;
	std::vector<Fiber> fibers;
	std::vector<Warp> warps;
	std::vector<int> runnable;
	int live, bar_arrived;
	Rng rng;
	bool failed;
	char err[512];
#if defined(__x86_64__)
	void *sched_sp;
#else
	ucontext_t sched_uc;
#endif
};

static thread_local Block *tls_block = nullptr;

void *dynamic_shared() { return tls_block ? tls_block->dyn.data() : nullptr; }
static thread_local Fiber *tls_fiber = nullptr;
thread_local Thread *tls_current = nullptr;

static const size_t kStackBytes = 64 * 1024;
static const int kMaxThreads = 1024;

// Per host thread: fiber stacks, each above a guard page.
static thread_local char *tls_stacks = nullptr;

static char *fiber_stack(int i) {
	if (!tls_stacks) {
		size_t total = (size_t)kMaxThreads * (kStackBytes + kPage);
		void *p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED) abort();
		tls_stacks = (char *)p;
		for (int k = 0; k < kMaxThreads; k++) mprotect(tls_stacks + (size_t)k * (kStackBytes + kPage), kPage, PROT_NONE);
	}
	return tls_stacks + (size_t)i * (kStackBytes + kPage) + kPage;
}

void describe_current(char *buf, size_t n) {
	if (tls_fiber && tls_block) {
		const Thread &t = tls_fiber->t;
		snprintf(buf, n, "kernel %s, block (%u,%u,%u), thread (%u,%u,%u)", tls_block->kernel, t.bid.x, t.bid.y,
		         t.bid.z, t.tid.x, t.tid.y, t.tid.z);
	} else {
		snprintf(buf, n, "%s", tls_op_name ? tls_op_name : "device operation");
	}
}

static void to_scheduler() {
	Fiber *f = tls_fiber;
	Block *b = tls_block;
#if defined(__x86_64__)
	mtlemu_switch(&f->sp, b->sched_sp);
#else
	swapcontext(&f->uc, &b->sched_uc);
#endif
	// resumed: the scheduler set tls_fiber / tls_current to us
}

static void block_fail(const char *fmt, ...) {
	Block *b = tls_block;
	if (!b->failed) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(b->err, sizeof b->err, fmt, ap);
		va_end(ap);
		b->failed = true;
	}
	for (;;) to_scheduler(); // never resumed: the scheduler abandons the block
}

static void make_runnable(Block *b, Fiber &f) {
	f.state = F_RUN;
	b->runnable.push_back(f.index);
}

static void release_barrier(Block *b) {
	for (Fiber &f : b->fibers)
		if (f.state == F_BAR) make_runnable(b, f);
	b->bar_arrived = 0;
	for (Warp &w : b->warps) w.at_bar = 0;
}

static void fiber_exit_checks(Block *b, Fiber &f) {
	b->live--;
	Warp &w = b->warps[f.warp];
	if (w.arrived && (w.mask & (1u << f.lane)))
		block_fail("lane %d of warp %d exited while lanes 0x%08x wait for it in a warp collective (mask 0x%08x)", f.lane,
		           f.warp, w.arrived, w.mask);
	if (b->bar_arrived > 0 && b->bar_arrived == b->live) release_barrier(b);
}

static void fiber_main() {
	Fiber *f = tls_fiber;
	Block *b = tls_block;
	(*b->body)();
	f = tls_fiber;
	b = tls_block;
	f->state = F_DONE;
	fiber_exit_checks(b, *f);
	to_scheduler();
	abort(); // never resumed
}

#if !defined(__x86_64__)
static void fiber_main_uc() { fiber_main(); }
#endif

static void fiber_init(Fiber &f) {
	char *stack = f.stack;
#if defined(__x86_64__)
	uintptr_t top = ((uintptr_t)(stack + kStackBytes)) & ~(uintptr_t)15;
	uint64_t *sp = (uint64_t *)top;
	*--sp = 0;                         // fake return address of fiber_main
	*--sp = (uint64_t)(void *)&fiber_main; // popped by ret
	for (int i = 0; i < 6; i++) *--sp = 0; // rbp rbx r12 r13 r14 r15
	*--sp = 0x037F00001F80ull;         // mxcsr (low) and x87 control word (high)
	f.sp = sp;
#else
	getcontext(&f.uc);
	f.uc.uc_stack.ss_sp = stack;
	f.uc.uc_stack.ss_size = kStackBytes;
	f.uc.uc_link = nullptr;
	makecontext(&f.uc, fiber_main_uc, 0);
#endif
}

void syncthreads() {
	Block *b = tls_block;
	Fiber *f = tls_fiber;
	if (!b) return;
	// Lanes of the same warp in a warp collective can never join it: on a
	// GPU this hangs or corrupts; other warps may well be mid-collective.
	Warp &w = b->warps[f->warp];
	if (w.arrived)
		block_fail("__syncthreads reached by lane %d of warp %d while lanes 0x%08x of that warp wait in a warp "
		           "collective",
		           f->lane, f->warp, w.arrived);
	f->state = F_BAR;
	w.at_bar++;
	if (++b->bar_arrived == b->live) release_barrier(b);
	to_scheduler();
}

static uint64_t warp_collective(int kind, unsigned mask, uint64_t v) {
	Block *b = tls_block;
	Fiber *f = tls_fiber;
	Warp &w = b->warps[f->warp];
	if (!(mask & (1u << f->lane)))
		block_fail("lane %d of warp %d calls a warp collective with mask 0x%08x that excludes it", f->lane, f->warp, mask);
	if ((mask & w.present) != mask)
		block_fail("warp collective with mask 0x%08x names lanes that do not exist (block of %d threads)", mask,
		           (int)b->fibers.size());
	if (w.arrived == 0) {
		w.kind = kind;
		w.mask = mask;
	} else if (w.kind != kind || w.mask != mask) {
		block_fail("divergent warp collectives in warp %d: lane %d calls %s with mask 0x%08x while lanes 0x%08x wait in "
		           "%s with mask 0x%08x",
		           f->warp, f->lane, kind == 3 ? "__syncwarp" : "a shuffle", mask, w.arrived,
		           w.kind == 3 ? "__syncwarp" : "a shuffle", w.mask);
	}
	if (w.at_bar)
		block_fail("warp collective in warp %d (mask 0x%08x) while %d of its lanes wait at __syncthreads", f->warp,
		           mask, w.at_bar);
	uint64_t gen = w.gen;
	w.slots[gen & 1][f->lane] = v;
	w.arrived |= 1u << f->lane;
	f->state = F_WARP;
	f->gen = gen;
	if (w.arrived == mask) {
		for (int l = 0; l < 32; l++)
			if (mask & (1u << l)) make_runnable(b, b->fibers[f->warp * 32 + l]);
		w.arrived = 0;
		w.gen++;
	}
	to_scheduler();
	return gen;
}

void syncwarp(unsigned mask) {
	if (!tls_block) return;
	warp_collective(3, mask, 0);
}

uint64_t shfl_exchange(unsigned mask, uint64_t v, int src, int xor_mask, int mode) {
	int kind = mode;
	uint64_t gen = warp_collective(kind, mask, v);
	Block *b = tls_block;
	Fiber *f = tls_fiber;
	Warp &w = b->warps[f->warp];
	int lane = f->lane, from;
	if (mode == 0)
		from = src & 31;
	else if (mode == 1)
		from = lane ^ (xor_mask & 31);
	else
		from = lane + src < 32 ? lane + src : lane;
	if (!(mask & (1u << from))) from = lane; // an inactive source lane: undefined on a GPU; own value here
	return w.slots[gen & 1][from];
}

void yield_point() {
	if (!tls_block) return;
	make_runnable(tls_block, *tls_fiber);
	to_scheduler();
}

void threadfence() {
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	yield_point();
}

// Runs one block to completion; false (with msg) when it failed.
static bool run_block(Block &b, uint3 bid, dim3 grid, dim3 block, char *msg, size_t msg_len) {
	int n = (int)(block.x * block.y * block.z);
	b.fibers.resize(n);
	b.warps.assign((n + 31) / 32, Warp{});
	for (int w = 0; w < (int)b.warps.size(); w++) {
		int lanes = n - w * 32 < 32 ? n - w * 32 : 32;
		b.warps[w].present = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
	}
	b.runnable.clear();
	b.live = n;
	b.bar_arrived = 0;
	b.failed = false;
	for (int i = 0; i < n; i++) {
		Fiber &f = b.fibers[i];
		f.index = i;
		f.lane = i & 31;
		f.warp = i >> 5;
		f.t.tid = uint3{(unsigned)(i % block.x), (unsigned)((i / block.x) % block.y), (unsigned)(i / (block.x * block.y))};
		f.t.bid = bid;
		f.t.bdim = block;
		f.t.gdim = grid;
		f.stack = fiber_stack(i);
		fiber_init(f);
		make_runnable(&b, f);
	}
	tls_block = &b;
	int done = 0;
	while (!b.runnable.empty() && !b.failed) {
		size_t k = (size_t)(b.rng() % b.runnable.size());
		int i = b.runnable[k];
		b.runnable[k] = b.runnable.back();
		b.runnable.pop_back();
		Fiber &f = b.fibers[i];
		tls_fiber = &f;
		tls_current = &f.t;
#if defined(__x86_64__)
		mtlemu_switch(&b.sched_sp, f.sp);
#else
		swapcontext(&b.sched_uc, &f.uc);
#endif
		if (f.state == F_DONE) done++;
	}
	tls_fiber = nullptr;
	tls_current = nullptr;
	tls_block = nullptr;
	if (b.failed) {
		snprintf(msg, msg_len, "kernel %s, block (%u,%u,%u): %s", b.kernel, bid.x, bid.y, bid.z, b.err);
		return false;
	}
	if (done != n) {
		int at_bar = 0, at_warp = 0;
		for (Fiber &f : b.fibers) {
			at_bar += f.state == F_BAR;
			at_warp += f.state == F_WARP;
		}
		snprintf(msg, msg_len,
		         "kernel %s, block (%u,%u,%u): deadlock: %d threads wait at __syncthreads, %d in warp collectives, %d "
		         "exited",
		         b.kernel, bid.x, bid.y, bid.z, at_bar, at_warp, n - at_bar - at_warp);
		return false;
	}
	return true;
}

static std::atomic<uint64_t> g_launches{0};

static uint64_t splitmix(uint64_t x) {
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

// Runs a whole grid (on a stream thread).
static void run_grid(const char *name, dim3 grid, dim3 block, size_t shmem, uint64_t launch_no, const Body &body) {
	uint64_t nb = (uint64_t)grid.x * grid.y * grid.z;
	std::vector<uint32_t> order(nb);
	for (uint64_t i = 0; i < nb; i++) order[i] = (uint32_t)i;
	Rng rng;
	rng.seed(splitmix(g_seed ^ splitmix(launch_no)));
	for (uint64_t i = nb; i > 1; i--) std::swap(order[i - 1], order[rng() % i]);
	Block b;
	b.kernel = name;
	b.body = &body;
	char msg[768];
	for (uint64_t k = 0; k < nb; k++) {
		uint32_t i = order[k];
		uint3 bid{i % grid.x, (i / grid.x) % grid.y, i / (grid.x * grid.y)};
		b.rng.seed(splitmix(g_seed ^ splitmix(launch_no * 1000003ull + i)));
		b.dyn.assign((shmem + 7) / 8, 0xFFFFFFFFFFFFFFFFull); // garbage until written
		if (!run_block(b, bid, grid, block, msg, sizeof msg)) {
			device_fault(cudaErrorLaunchFailure, "%s", msg);
			return;
		}
	}
}

// ---------------------------------------------------------------- streams

struct Op {
	const char *name;
	std::function<void()> fn;
};

} // namespace mtlemu

struct mtlemu_graph {
	std::vector<mtlemu::Op> nodes;
};
struct mtlemu_graph_exec {
	std::vector<mtlemu::Op> nodes;
};

struct mtlemu_stream {
	std::mutex mu;
	std::condition_variable cv;
	std::deque<mtlemu::Op> q;
	uint64_t enq = 0, done = 0;
	bool stop = false;
	std::thread th;
	bool capturing = false;
	bool capture_invalid = false;
	mtlemu_graph *graph = nullptr;
};

struct mtlemu_event {
	std::mutex mu;
	bool timing;
	mtlemu_stream *s = nullptr;
	uint64_t target = 0;
	std::shared_ptr<std::atomic<int64_t>> stamp; // ns when it happened, -1 before
	bool captured = false;
};

namespace mtlemu {

static std::mutex g_streams_mu;
static std::vector<mtlemu_stream *> g_streams;
static std::condition_variable g_progress;
static std::mutex g_progress_mu;

// Runs one device operation on the current (stream) thread: faults end the
// operation and become the sticky error; memory opened for it is closed.
static void run_op(const Op &op) {
	if (sticky() != cudaSuccess) return; // the context is dead, as after a GPU fault
	sigjmp_buf jb;
	tls_op_name = op.name;
	tls_faulted = false;
	if (sigsetjmp(jb, 1) == 0) {
		tls_op_jmp = &jb;
		op.fn();
	}
	tls_op_jmp = nullptr;
	tls_fiber = nullptr;
	tls_block = nullptr;
	tls_current = nullptr;
	if (tls_faulted) device_fault(cudaErrorIllegalAddress, "%s", tls_fault_msg);
	close_device_memory();
	tls_op_name = nullptr;
}

static void stream_main(mtlemu_stream *s) {
	tls_device = true;
	// An alternate signal stack: faults on fiber stacks (guard pages) still
	// get a stack to run the handler on.
	stack_t ss;
	ss.ss_size = 256 * 1024;
	ss.ss_sp = malloc(ss.ss_size);
	ss.ss_flags = 0;
	sigaltstack(&ss, nullptr);
	for (;;) {
		Op op;
		{
			std::unique_lock<std::mutex> lk(s->mu);
			s->cv.wait(lk, [s] { return s->stop || !s->q.empty(); });
			if (s->q.empty()) break;
			op = std::move(s->q.front());
			s->q.pop_front();
		}
		run_op(op);
		{
			std::lock_guard<std::mutex> lk(s->mu);
			s->done++;
		}
		s->cv.notify_all();
		{
			std::lock_guard<std::mutex> lk(g_progress_mu);
		}
		g_progress.notify_all();
	}
	ss.ss_flags = SS_DISABLE;
	sigaltstack(&ss, nullptr);
	free(ss.ss_sp);
	if (tls_stacks) {
		munmap(tls_stacks, (size_t)kMaxThreads * (kStackBytes + kPage));
		tls_stacks = nullptr;
	}
}

static mtlemu_stream *g_default_stream;

static mtlemu_stream *stream_new() {
	// The seed, once per process, where a failing test's output shows it.
	static std::once_flag said;
	std::call_once(said, [] {
		fprintf(stderr, "mtlcuda-emu: emulated CUDA device, MTLCUDA_EMU_SEED=%llu\n", (unsigned long long)g_seed);
	});
	mtlemu_stream *s = new mtlemu_stream();
	s->th = std::thread(stream_main, s);
	std::lock_guard<std::mutex> lk(g_streams_mu);
	g_streams.push_back(s);
	return s;
}

static mtlemu_stream *resolve(cudaStream_t s) {
	if (s) return s;
	static std::once_flag once;
	std::call_once(once, [] { g_default_stream = stream_new(); });
	return g_default_stream;
}

// Queues op on s, or records it while s is being captured.
cudaError_t submit(cudaStream_t st, const char *name, std::function<void()> fn) {
	mtlemu_stream *s = resolve(st);
	std::unique_lock<std::mutex> lk(s->mu);
	if (s->capturing) {
		s->graph->nodes.push_back(Op{name, std::move(fn)});
		return cudaSuccess;
	}
	s->q.push_back(Op{name, std::move(fn)});
	s->enq++;
	lk.unlock();
	s->cv.notify_all();
	return cudaSuccess;
}

static bool capturing(cudaStream_t st) {
	mtlemu_stream *s = resolve(st);
	std::lock_guard<std::mutex> lk(s->mu);
	return s->capturing;
}

// A call the runtime does not allow on a capturing stream: it fails and
// invalidates the capture, as CUDA does.
static cudaError_t capture_violation(cudaStream_t st) {
	mtlemu_stream *s = resolve(st);
	std::lock_guard<std::mutex> lk(s->mu);
	s->capture_invalid = true;
	return cudaErrorStreamCaptureUnsupported;
}

static void stream_wait(mtlemu_stream *s) {
	std::unique_lock<std::mutex> lk(s->mu);
	uint64_t target = s->enq;
	s->cv.wait(lk, [s, target] { return s->done >= target; });
}

void launch(const char *name, dim3 grid, dim3 block, size_t shmem, cudaStream_t s, Body body) {
	uint64_t threads = (uint64_t)block.x * block.y * block.z;
	if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > (uint64_t)kMaxThreads ||
	    grid.y > 65535 || grid.z > 65535 || block.z > 64 || shmem > 48 * 1024) {
		set_last(cudaErrorInvalidConfiguration);
		return;
	}
	if (sticky() != cudaSuccess) {
		set_last(sticky());
		return;
	}
	// Launch numbers are drawn when the work runs, so that a graph replay
	// gets a fresh scheduling order.
	submit(s, name, [name, grid, block, shmem, body]() {
		uint64_t no = g_launches.fetch_add(1);
		run_grid(name, grid, block, shmem, no, body);
	});
}

// ---------------------------------------------------------------- CUB

cudaError_t cub_call(const char *name, void *temp, size_t &temp_bytes, size_t need, cudaStream_t s,
                     std::function<void()> op) {
	if (!temp) {
		temp_bytes = need;
		return cudaSuccess;
	}
	if (sticky() != cudaSuccess) return sticky();
	if (temp_bytes < need || !device_range(temp, need)) return set_last(cudaErrorInvalidValue);
	// The temporary storage is really used: scribbled over, so that a buffer
	// overlapping it shows.
	return submit(s, name, [temp, need, op]() {
		memset(temp, 0x5A, need);
		op();
	});
}

void cub_sort_pairs_u32_i32(const unsigned *kin, unsigned *kout, const int *vin, int *vout, int n, int begin_bit,
                            int end_bit) {
	// A stable LSD radix sort over bits [begin_bit, end_bit) only, as CUB's:
	// bits outside the range do not order the keys.
	std::vector<unsigned> k(kin, kin + n), k2(n);
	std::vector<int> v(vin, vin + n), v2(n);
	for (int bit = begin_bit; bit < end_bit; bit += 8) {
		int width = end_bit - bit < 8 ? end_bit - bit : 8;
		unsigned mask = (1u << width) - 1;
		size_t count[257] = {0};
		for (int i = 0; i < n; i++) count[((k[i] >> bit) & mask) + 1]++;
		for (int d = 0; d < 256; d++) count[d + 1] += count[d];
		for (int i = 0; i < n; i++) {
			size_t at = count[(k[i] >> bit) & mask]++;
			k2[at] = k[i];
			v2[at] = v[i];
		}
		k.swap(k2);
		v.swap(v2);
	}
	memcpy(kout, k.data(), (size_t)n * 4);
	memcpy(vout, v.data(), (size_t)n * 4);
}

void cub_rle_u32(const unsigned *in, unsigned *uniq, int *counts, int *runs, int n) {
	int r = 0;
	for (int i = 0; i < n;) {
		int j = i + 1;
		while (j < n && in[j] == in[i]) j++;
		uniq[r] = in[i];
		counts[r] = j - i;
		r++;
		i = j;
	}
	*runs = r;
}

void cub_exclusive_sum_i32(const int *in, int *out, int n) {
	int acc = 0;
	for (int i = 0; i < n; i++) {
		int x = in[i];
		out[i] = acc;
		acc += x;
	}
}

// Whether [p, p+n) lies inside one block of pinned host memory.
bool pinned_range(const void *p, size_t n) {
	std::lock_guard<std::mutex> lk(g_mem_mu);
	auto it = g_pinned.upper_bound((uintptr_t)p);
	if (it == g_pinned.begin()) return false;
	--it;
	return (uintptr_t)p + n <= it->first + it->second;
}

cudaError_t host_alloc(void **p, size_t bytes) {
	*p = nullptr;
	void *q = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (q == MAP_FAILED) return cudaErrorMemoryAllocation;
	std::lock_guard<std::mutex> lk(g_mem_mu);
	g_pinned[(uintptr_t)q] = bytes;
	*p = q;
	return cudaSuccess;
}

cudaError_t host_free(void *p) {
	if (!p) return cudaSuccess;
	std::lock_guard<std::mutex> lk(g_mem_mu);
	auto it = g_pinned.find((uintptr_t)p);
	if (it == g_pinned.end()) return cudaErrorInvalidValue;
	munmap(p, it->second);
	g_pinned.erase(it);
	return cudaSuccess;
}

} // namespace mtlemu

// ---------------------------------------------------------------- the C API

using namespace mtlemu;

namespace {

const char *error_name(cudaError_t e) {
	switch (e) {
	case cudaSuccess: return "cudaSuccess";
	case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
	case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
	case cudaErrorInitializationError: return "cudaErrorInitializationError";
	case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
	case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
	case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
	case cudaErrorNotReady: return "cudaErrorNotReady";
	case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
	case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
	case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
	case cudaErrorNoDevice: return "cudaErrorNoDevice";
	case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
	case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
	case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
	case cudaErrorIllegalState: return "cudaErrorIllegalState";
	default: return "cudaErrorUnknown";
	}
}

const char *error_string(cudaError_t e) {
	switch (e) {
	case cudaSuccess: return "no error";
	case cudaErrorInvalidValue: return "invalid argument";
	case cudaErrorMemoryAllocation: return "out of memory";
	case cudaErrorInvalidConfiguration: return "invalid configuration argument";
	case cudaErrorInvalidDevice: return "invalid device ordinal";
	case cudaErrorInvalidResourceHandle: return "invalid resource handle";
	case cudaErrorNotReady: return "device not ready";
	case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
	case cudaErrorLaunchFailure: return "unspecified launch failure";
	case cudaErrorNoDevice: return "no CUDA-capable device is detected";
	case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
	case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
	case cudaErrorIllegalState: return "the operation is not permitted in the current state";
	default: return "unknown error";
	}
}

// Every call first reports a sticky fault of earlier device work.
#define EMU_STICKY()                                  \
	do {                                              \
		cudaError_t st_ = sticky();                   \
		if (st_ != cudaSuccess) return set_last(st_); \
	} while (0)

bool any_capturing() {
	std::lock_guard<std::mutex> lk(g_streams_mu);
	for (mtlemu_stream *s : g_streams) {
		std::lock_guard<std::mutex> l2(s->mu);
		if (s->capturing) return true;
	}
	return false;
}

int64_t now_ns() {
	return (int64_t)std::chrono::duration_cast<std::chrono::nanoseconds>(
	           std::chrono::steady_clock::now().time_since_epoch())
	    .count();
}

} // namespace

extern "C" {

const char *cudaGetErrorName(cudaError_t e) { return error_name(e); }

const char *cudaGetErrorString(cudaError_t e) {
	// A device fault's report (kernel, block, thread, address) travels with
	// the sticky error's description.
	if (e != cudaSuccess && e == sticky() && g_sticky_msg[0]) {
		static thread_local char buf[2300];
		snprintf(buf, sizeof buf, "%s: %s", error_string(e), g_sticky_msg);
		return buf;
	}
	return error_string(e);
}

cudaError_t cudaGetLastError(void) {
	cudaError_t st = sticky();
	if (st != cudaSuccess) return st;
	cudaError_t e = tls_last;
	tls_last = cudaSuccess;
	return e;
}

cudaError_t cudaPeekAtLastError(void) {
	cudaError_t st = sticky();
	return st != cudaSuccess ? st : tls_last;
}

cudaError_t cudaDriverGetVersion(int *v) {
	*v = CUDART_VERSION;
	return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v) {
	*v = CUDART_VERSION;
	return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int *n) {
	*n = device_count();
	if (*n <= 0) {
		*n = 0;
		return set_last(cudaErrorNoDevice);
	}
	return cudaSuccess;
}

cudaError_t cudaSetDevice(int d) {
	if (d < 0 || d >= device_count()) return set_last(cudaErrorInvalidDevice);
	return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d) {
	if (d < 0 || d >= device_count()) return set_last(cudaErrorInvalidDevice);
	memset(p, 0, sizeof *p);
	snprintf(p->name, sizeof p->name, "mtlcuda emulated device (host CPU, seed %llu)", (unsigned long long)g_seed);
	p->totalGlobalMem = g_total_mem;
	p->major = 8;
	p->minor = 0;
	p->multiProcessorCount = g_sms;
	p->warpSize = 32;
	p->maxThreadsPerBlock = kMaxThreads;
	return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int d) {
	if (d < 0 || d >= device_count()) return set_last(cudaErrorInvalidDevice);
	switch (a) {
	case cudaDevAttrMultiProcessorCount: *v = g_sms; return cudaSuccess;
	case cudaDevAttrMemoryPoolsSupported: *v = 1; return cudaSuccess;
	}
	return set_last(cudaErrorInvalidValue);
}

cudaError_t cudaDeviceSynchronize(void) {
	if (any_capturing()) return set_last(cudaErrorStreamCaptureUnsupported);
	std::vector<mtlemu_stream *> all;
	{
		std::lock_guard<std::mutex> lk(g_streams_mu);
		all = g_streams;
	}
	for (mtlemu_stream *s : all) stream_wait(s);
	EMU_STICKY();
	return cudaSuccess;
}

static mtlemu_mempool *const kPool = reinterpret_cast<mtlemu_mempool *>(uintptr_t(0x9001));

cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *pool, int d) {
	if (d < 0 || d >= device_count()) return set_last(cudaErrorInvalidDevice);
	*pool = kPool;
	return cudaSuccess;
}

cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr a, void *v) {
	(void)v;
	if (pool != kPool || a != cudaMemPoolAttrReleaseThreshold) return set_last(cudaErrorInvalidValue);
	return cudaSuccess;
}

cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr a, void *v) {
	if (pool != kPool) return set_last(cudaErrorInvalidValue);
	std::lock_guard<std::mutex> lk(g_mem_mu);
	switch (a) {
	case cudaMemPoolAttrReservedMemCurrent: *(uint64_t *)v = g_pool_reserved; return cudaSuccess;
	case cudaMemPoolAttrUsedMemCurrent: *(uint64_t *)v = g_pool_used; return cudaSuccess;
	default: return set_last(cudaErrorInvalidValue);
	}
}

cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, size_t keep) {
	if (pool != kPool) return set_last(cudaErrorInvalidValue);
	std::lock_guard<std::mutex> lk(g_mem_mu);
	size_t want = g_pool_used > keep ? g_pool_used : keep;
	if (g_pool_reserved > want) g_pool_reserved = want;
	return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes) {
	EMU_STICKY();
	return set_last(dev_alloc(p, bytes, false));
}

cudaError_t cudaFree(void *p) {
	EMU_STICKY();
	// cudaFree synchronises the device before it frees.
	if (!any_capturing()) {
		std::vector<mtlemu_stream *> all;
		{
			std::lock_guard<std::mutex> lk(g_streams_mu);
			all = g_streams;
		}
		for (mtlemu_stream *s : all) stream_wait(s);
	}
	return set_last(dev_free(p, false));
}

cudaError_t cudaMallocAsync(void **p, size_t bytes, cudaStream_t s) {
	EMU_STICKY();
	// Graph memory nodes are not emulated: the library never allocates
	// while capturing.
	if (capturing(s)) return set_last(capture_violation(s));
	return set_last(dev_alloc(p, bytes, true));
}

cudaError_t cudaFreeAsync(void *p, cudaStream_t s) {
	EMU_STICKY();
	if (capturing(s)) return set_last(capture_violation(s));
	if (!p) return cudaSuccess;
	if (!is_device_alloc(p)) return set_last(cudaErrorInvalidValue);
	return submit(s, "cudaFreeAsync", [p]() { dev_free(p, true); });
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total) {
	EMU_STICKY();
	std::lock_guard<std::mutex> lk(g_mem_mu);
	*total = g_total_mem;
	*free_bytes = g_total_mem - g_live_bytes;
	return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned flags) {
	(void)flags;
	EMU_STICKY();
	return set_last(host_alloc(p, bytes));
}

cudaError_t cudaFreeHost(void *p) { return set_last(host_free(p)); }

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
	EMU_STICKY();
	if (bytes == 0) return cudaSuccess;
	const void *dev_src = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice ? src : nullptr;
	void *dev_dst = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice ? dst : nullptr;
	if (kind != cudaMemcpyHostToDevice && kind != cudaMemcpyDeviceToHost && kind != cudaMemcpyDeviceToDevice)
		return set_last(cudaErrorInvalidValue);
	if ((dev_src && !device_range(dev_src, bytes)) || (dev_dst && !device_range(dev_dst, bytes)))
		return set_last(cudaErrorInvalidValue);
	const void *host = kind == cudaMemcpyHostToDevice ? src : kind == cudaMemcpyDeviceToHost ? dst : nullptr;
	if (host && device_range(host, 1)) return set_last(cudaErrorInvalidValue);
	bool pinned = !host || pinned_range(host, bytes);
	if (!pinned && capturing(s)) return set_last(capture_violation(s));
	if (pinned) return submit(s, "cudaMemcpyAsync", [dst, src, bytes]() { memcpy(dst, src, bytes); });
	// Pageable host memory: the copy is done (staged) before the call
	// returns, as with the CUDA runtime, so the caller may reuse the buffer.
	mtlemu_stream *st = resolve(s);
	if (kind == cudaMemcpyHostToDevice) {
		std::shared_ptr<std::vector<char>> stage = std::make_shared<std::vector<char>>((const char *)src,
		                                                                               (const char *)src + bytes);
		return submit(s, "cudaMemcpyAsync", [dst, stage, bytes]() { memcpy(dst, stage->data(), bytes); });
	}
	submit(s, "cudaMemcpyAsync", [dst, src, bytes]() { memcpy(dst, src, bytes); });
	stream_wait(st);
	EMU_STICKY();
	return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
	cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
	if (e != cudaSuccess) return e;
	stream_wait(resolve(nullptr));
	EMU_STICKY();
	return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s) {
	EMU_STICKY();
	if (bytes == 0) return cudaSuccess;
	if (!device_range(p, bytes)) return set_last(cudaErrorInvalidValue);
	return submit(s, "cudaMemsetAsync", [p, value, bytes]() { memset(p, value, bytes); });
}

cudaError_t cudaMemset(void *p, int value, size_t bytes) {
	cudaError_t e = cudaMemsetAsync(p, value, bytes, nullptr);
	if (e != cudaSuccess) return e;
	stream_wait(resolve(nullptr));
	EMU_STICKY();
	return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
	(void)flags;
	EMU_STICKY();
	*s = stream_new();
	return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
	if (!s) return set_last(cudaErrorInvalidResourceHandle);
	{
		std::lock_guard<std::mutex> lk(g_streams_mu);
		for (size_t i = 0; i < g_streams.size(); i++)
			if (g_streams[i] == s) {
				g_streams.erase(g_streams.begin() + (long)i);
				break;
			}
	}
	{
		std::lock_guard<std::mutex> lk(s->mu);
		s->stop = true;
	}
	s->cv.notify_all();
	s->th.join();
	delete s->graph;
	delete s;
	return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
	if (capturing(s)) return set_last(capture_violation(s));
	stream_wait(resolve(s));
	EMU_STICKY();
	return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
	EMU_STICKY();
	mtlemu_event *ev = new mtlemu_event();
	ev->timing = (flags & cudaEventDisableTiming) == 0;
	*e = ev;
	return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
	if (!e) return set_last(cudaErrorInvalidResourceHandle);
	delete e;
	return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
	EMU_STICKY();
	if (!e) return set_last(cudaErrorInvalidResourceHandle);
	auto stamp = std::make_shared<std::atomic<int64_t>>(-1);
	{
		std::lock_guard<std::mutex> lk(e->mu);
		e->stamp = stamp;
		e->captured = capturing(s);
	}
	return submit(s, "cudaEventRecord", [stamp]() { stamp->store(now_ns()); });
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags) {
	(void)flags;
	EMU_STICKY();
	if (!e) return set_last(cudaErrorInvalidResourceHandle);
	std::shared_ptr<std::atomic<int64_t>> stamp;
	{
		std::lock_guard<std::mutex> lk(e->mu);
		stamp = e->stamp;
	}
	if (!stamp) return cudaSuccess; // never recorded: nothing to wait for
	return submit(s, "cudaStreamWaitEvent", [stamp]() {
		std::unique_lock<std::mutex> lk(g_progress_mu);
		g_progress.wait(lk, [&stamp] { return stamp->load() >= 0 || sticky() != cudaSuccess; });
	});
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
	if (!e) return set_last(cudaErrorInvalidResourceHandle);
	std::shared_ptr<std::atomic<int64_t>> stamp;
	{
		std::lock_guard<std::mutex> lk(e->mu);
		stamp = e->stamp;
		if (e->captured) return set_last(cudaErrorStreamCaptureUnsupported);
	}
	if (stamp) {
		std::unique_lock<std::mutex> lk(g_progress_mu);
		g_progress.wait(lk, [&stamp] { return stamp->load() >= 0 || sticky() != cudaSuccess; });
	}
	EMU_STICKY();
	return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t e) {
	EMU_STICKY();
	if (!e) return set_last(cudaErrorInvalidResourceHandle);
	std::lock_guard<std::mutex> lk(e->mu);
	if (e->captured) return set_last(cudaErrorStreamCaptureUnsupported);
	if (!e->stamp || e->stamp->load() >= 0) return cudaSuccess;
	return set_last(cudaErrorNotReady);
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
	EMU_STICKY();
	if (!a || !b || !a->timing || !b->timing) return set_last(cudaErrorInvalidResourceHandle);
	if (!a->stamp || !b->stamp) return set_last(cudaErrorInvalidResourceHandle);
	int64_t x = a->stamp->load(), y = b->stamp->load();
	if (x < 0 || y < 0) return set_last(cudaErrorNotReady);
	*ms = (float)((double)(y - x) / 1e6);
	return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t st, cudaStreamCaptureMode mode) {
	(void)mode;
	EMU_STICKY();
	if (!st) return set_last(cudaErrorStreamCaptureUnsupported); // the legacy stream cannot be captured
	std::lock_guard<std::mutex> lk(st->mu);
	if (st->capturing) return set_last(cudaErrorIllegalState);
	st->capturing = true;
	st->capture_invalid = false;
	st->graph = new mtlemu_graph();
	return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t *g) {
	*g = nullptr;
	if (!st) return set_last(cudaErrorIllegalState);
	std::lock_guard<std::mutex> lk(st->mu);
	if (!st->capturing) return set_last(cudaErrorIllegalState);
	st->capturing = false;
	mtlemu_graph *graph = st->graph;
	st->graph = nullptr;
	if (st->capture_invalid) {
		delete graph;
		return set_last(cudaErrorStreamCaptureInvalidated);
	}
	*g = graph;
	return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g, unsigned long long flags) {
	(void)flags;
	EMU_STICKY();
	if (!g) return set_last(cudaErrorInvalidValue);
	*exec = new mtlemu_graph_exec{g->nodes};
	return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t g) {
	delete g;
	return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
	delete exec;
	return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
	EMU_STICKY();
	if (!exec) return set_last(cudaErrorInvalidValue);
	for (const Op &op : exec->nodes) submit(s, op.name, op.fn);
	return cudaSuccess;
}

} // extern "C"
