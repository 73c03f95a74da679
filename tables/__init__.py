"""The Linux generic page table (genpt / iommupt) as transaction generators."""
