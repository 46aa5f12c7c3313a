"""`edgemm bench`: model and pipeline benchmarks, reports, and regression comparison."""
