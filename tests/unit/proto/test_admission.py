import pytest

from dnstls.proto.admission import Admission, AdmissionLimits


def test_per_client_and_global_limits_hold_and_recover() -> None:
    a = Admission(AdmissionLimits(max_connections=3, max_connections_per_client=2))
    assert a.admit("192.0.2.1") is None
    assert a.admit("192.0.2.1") is None
    assert a.admit("192.0.2.1") == "per-client connection limit"
    assert a.admit("192.0.2.2") is None
    assert a.admit("192.0.2.3") == "global connection limit"
    a.release("192.0.2.1")
    assert a.admit("192.0.2.3") is None
    for client in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        a.release(client)
    assert a.statistics() == {"open": 0, "clients": 0, "refused_global": 1,
                              "refused_per_client": 1}


def test_release_without_admit_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        Admission(AdmissionLimits()).release("192.0.2.9")
