"""The iommu core of the io-pgtable era: iommu_pgsize's split (legacy_pt.md 1.2, 1.4)."""

from __future__ import annotations

import pytest

from iommusim.tables.iopgtable.iommu import iommu_pgsize

K, M, G = 1 << 12, 1 << 21, 1 << 30
COMMON = K | M | G  # VT-d with 1G superpages, AMD v2, ARM 4K granule
AMD_V1 = ((1 << 52) - 1) & ~(K - 1) ^ (1 << 39)  # AMD_IOMMU_PGSIZES: 4K..2^51 but 512G


@pytest.mark.parametrize(
    ("size", "chunk"),
    [(K, (K, 1)), (M, (M, 1)), (G, (G, 1)), (256 * K, (K, 256)), (256 * M, (M, 256)),
     (256 * G, (G, 256))],
)
def test_naturally_aligned_requests_are_one_chunk(size, chunk):
    assert iommu_pgsize(COMMON, 0, 0, size) == chunk


@pytest.mark.parametrize(
    ("size", "chunk"), [(256 * K, (1 << 20, 1)), (256 * M, (1 << 29, 1)), (256 * G, (1 << 38, 1))]
)
def test_amd_v1_bitmap_takes_one_replicated_page(size, chunk):
    assert iommu_pgsize(AMD_V1, 0, 0, size) == chunk


def test_unaligned_request_is_cut_where_a_larger_page_fits():
    """Map 4 MiB at 0x1FF000: (4K, 1) up to the 2M boundary, (2M, 1), then (4K, 511)."""
    iova, size, chunks = 0x1FF000, 4 << 20, []
    while size:
        pgsize, count = iommu_pgsize(COMMON, iova, iova + G, size)
        chunks.append((pgsize, count))
        iova += pgsize * count
        size -= pgsize * count
    assert chunks == [(K, 1), (M, 1), (K, 511)]


def test_addresses_that_disagree_modulo_the_larger_size_never_use_it():
    assert iommu_pgsize(COMMON, 0, K, 2 * M) == (K, 1024)


def test_no_usable_size_is_a_bug():
    with pytest.raises(ValueError, match="no page size"):
        iommu_pgsize(M, 0, 0, K)
