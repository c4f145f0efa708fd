import steer_lens


def test_import():
    assert steer_lens.__doc__
