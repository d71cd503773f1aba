/*
 * Instruction sets: which kernel variants are compiled and which one runs.
 *
 * On x86-64 with GCC or clang the kernel template is compiled three times, each inside a
 * target region (function attributes applied by pragma): baseline x86-64 (SSE2), AVX2+FMA and
 * AVX-512 (F/BW/CD/DQ/VL, the x86-64-v4 set spelled out so GCC < 11 accepts it).  The
 * always_inline helpers of _simd.h are inlined into each variant and take its ISA.  There is
 * no ifunc and no target_clones, so this works the same with glibc or musl, GCC or clang.
 *
 * The resolver runs once per extension module at import (fce_isa_init): it takes the best
 * level the CPU (and OS) supports, or the one FASTCE_ISA asks for -- baseline | avx2 | avx512
 * | auto -- capped to what the CPU supports.  Every entry point then switches on
 * fce_isa_level, so what `python -m fastce info` reports is what runs, and tests can force
 * each path in a subprocess.  FCE_NO_CLONES (sanitizer and -march=native builds) or another
 * platform gives the baseline variant only (compiled for whatever -march the build uses).
 */
#ifndef FASTCE_ISA_H
#define FASTCE_ISA_H

#include <stdlib.h>
#include <string.h>

/* clang >= 7, or GCC >= 8 (AVX-512 target names and prefer-vector-width); clang also defines
 * __GNUC__, so it is tested first */
#if defined(__clang__)
#define FCE_COMPILER_OK (__clang_major__ >= 7)
#elif defined(__GNUC__)
#define FCE_COMPILER_OK (__GNUC__ >= 8)
#else
#define FCE_COMPILER_OK 0
#endif
#if defined(__x86_64__) && !defined(FCE_NO_CLONES) && FCE_COMPILER_OK
#define FCE_MULTI_ISA 1
#else
#define FCE_MULTI_ISA 0
#endif

#define FCE_ISA_AVX2_LIST "avx2,fma,bmi,bmi2,f16c,lzcnt,popcnt"
#define FCE_ISA_AVX512_LIST "avx512f,avx512bw,avx512cd,avx512dq,avx512vl," FCE_ISA_AVX2_LIST

#if FCE_MULTI_ISA && defined(__clang__)
#define FCE_TARGET_AVX2_BEGIN _Pragma("clang attribute push (__attribute__((target(\"avx2,fma,bmi,bmi2,f16c,lzcnt,popcnt\"))), apply_to = function)")
#define FCE_TARGET_AVX2_END _Pragma("clang attribute pop")
#define FCE_TARGET_AVX512_BEGIN _Pragma("clang attribute push (__attribute__((target(\"avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx2,fma,bmi,bmi2,f16c,lzcnt,popcnt\"))), apply_to = function)")
#define FCE_TARGET_AVX512_END _Pragma("clang attribute pop")
#elif FCE_MULTI_ISA
#define FCE_TARGET_AVX2_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,bmi,bmi2,f16c,lzcnt,popcnt\")")
#define FCE_TARGET_AVX2_END _Pragma("GCC pop_options")
/* 512-bit vectors on purpose: GCC's generic tuning may otherwise stay at 256 */
#define FCE_TARGET_AVX512_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx2,fma,bmi,bmi2,f16c,lzcnt,popcnt,prefer-vector-width=512\")")
#define FCE_TARGET_AVX512_END _Pragma("GCC pop_options")
#endif

enum { FCE_ISA_BASE = 0, FCE_ISA_AVX2 = 1, FCE_ISA_AVX512 = 2 };

/* The level every entry point of this extension module uses (set by fce_isa_init). */
static int fce_isa_level = 0;
/* What FASTCE_ISA asked for: -1 auto / unset, -2 not understood, else a level. */
static int fce_isa_requested = -1;

static const char *fce_isa_name(int level)
{
#if FCE_MULTI_ISA
    return level == FCE_ISA_AVX512 ? "avx512" : level == FCE_ISA_AVX2 ? "avx2" : "baseline";
#else
    (void)level;
    return "single";        /* one variant, compiled for the build's -march */
#endif
}

/* Highest level this CPU and OS can run. */
static int fce_isa_best(void)
{
#if FCE_MULTI_ISA
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq")
            && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2")
            && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
        return FCE_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
            && __builtin_cpu_supports("bmi2"))
        return FCE_ISA_AVX2;
#endif
    return FCE_ISA_BASE;
}

static int fce_isa_parse(const char *s)
{
    if (s == NULL || s[0] == '\0' || strcmp(s, "auto") == 0) return -1;
    if (strcmp(s, "baseline") == 0 || strcmp(s, "sse2") == 0) return FCE_ISA_BASE;
    if (strcmp(s, "avx2") == 0) return FCE_ISA_AVX2;
    if (strcmp(s, "avx512") == 0) return FCE_ISA_AVX512;
    return -2;
}

/* Resolve once per module; returns the chosen level. */
static int fce_isa_init(void)
{
    int best = fce_isa_best();
    fce_isa_requested = fce_isa_parse(getenv("FASTCE_ISA"));
    fce_isa_level = fce_isa_requested >= 0 && fce_isa_requested < best ? fce_isa_requested : best;
    return fce_isa_level;
}

static const char *fce_isa_chosen(void) { return fce_isa_name(fce_isa_level); }
static int fce_isa_request(void) { return fce_isa_requested; }
static int fce_isa_multi(void) { return FCE_MULTI_ISA; }

#endif
