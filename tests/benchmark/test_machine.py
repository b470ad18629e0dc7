"""The machine name that every benchmark row records: CPU generations behind one generic name stay apart."""

from __future__ import annotations

from anomalib_fewshot.benchmark.machine import cpu_name

# Two CPU generations that both call themselves "AMD EPYC", trimmed /proc/cpuinfo (family 26 is the VM of
# 2026-12-01; the family-25 text is made up for the test).
ZEN5 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n\n"
ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n\n"


def test_generic_model_names_are_told_apart_by_family_and_model():
    assert cpu_name(ZEN5).startswith("AMD EPYC (family 26, model 2), ")
    assert cpu_name(ZEN5) != cpu_name(ZEN4)
    assert cpu_name(ZEN5).endswith(" cores")


def test_the_first_processor_is_named_and_missing_fields_are_left_out():
    two = ZEN5 + ZEN4.replace("processor\t: 0", "processor\t: 1")
    assert cpu_name(two) == cpu_name(ZEN5)  # one name per machine, from its first processor
    assert cpu_name("model name\t: Some CPU\n").startswith("Some CPU, ")  # no family/model fields (e.g. ARM)
    assert cpu_name("").endswith(" cores")  # no /proc/cpuinfo at all (macOS, Windows)
