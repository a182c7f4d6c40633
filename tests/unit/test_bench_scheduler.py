"""``make bench-scheduler``'s measures, on a timeline small enough to count by hand."""

from pytest import approx

from bench.scheduler import analyse


def test_idle_gpu_seconds_count_the_idle_gpus_of_hosts_where_a_waiting_job_would_have_fitted():
    jobs = [  # a 4-GPU job on host 0 for 10 s while a 1-GPU job waits, though hosts 1 and 2 have 4 GPUs free each
        {"gpus": 4, "seconds": 10, "sent": 0.0, "entered": 0.0, "left": 10.0, "host": 0, "mask": 0b1111},
        {"gpus": 1, "seconds": 1, "sent": 0.0, "entered": 10.0, "left": 11.0, "host": 0, "mask": 0b0001},
        {"gpus": 2, "seconds": 0.5, "sent": 10.0, "entered": 10.2, "left": 10.7, "host": 1, "mask": 0b0011},
    ]
    result = analyse(jobs)
    # 0-10 s: 8 idle GPUs on hosts 1 and 2; 10-10.2 s: the 2-GPU job waits, 3 + 4 + 4 GPUs idle
    assert result["idle_gpu_s_while_a_job_fitted"] == approx(80 + 11 * 0.2)
    assert result["of_which_in_longer_stretches"] == approx(2 * 4 * 10.2)  # hosts 1 and 2, 0 to 10.2 s
    assert result["of_which_in_stretches_le_1s"] == approx(3 * 0.2)  # host 0, 10 to 10.2 s
    assert result["makespan_s"] == 11.0 and result["lower_bound_s"] == 10.0  # the longest job: > 42 GPU-s / 12
    assert result["intervals_with_a_gpu_running_two_jobs"] == 0
