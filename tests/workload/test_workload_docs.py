"""The examples in the workload and serving-metrics docstrings run and print what they say."""

import doctest

import pytest

import simcluster.serving.metrics
import simcluster.workload.readers
import simcluster.workload.synthetic
import simcluster.workload.trace


@pytest.mark.parametrize("module", [simcluster.workload.trace, simcluster.workload.synthetic,
                                    simcluster.workload.readers, simcluster.serving.metrics])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
