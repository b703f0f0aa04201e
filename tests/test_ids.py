"""Production ids: a prefix and a lowercase random version-4 UUID; stamped ids: the
given order id and trade ids derived from a seed."""

from __future__ import annotations

import os
import re
import threading
import uuid

from miniexchange.ids import RandomIds, StampedIds, random_uuid4, seeded_uuid4

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_random_uuid4_is_a_version_4_uuid_printed_as_uuid_prints_it() -> None:
    for _ in range(1_000):  # several 4 KiB refills of the pool
        text = random_uuid4()
        assert UUID4.fullmatch(text), text
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == text


def test_every_variant_digit_appears() -> None:
    assert {random_uuid4()[19] for _ in range(2_000)} == set("89ab")


def test_ids_are_unique_across_threads() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(into: list[str]) -> None:
        into.extend(random_uuid4() for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [text for into in made for text in into]
    assert len(set(every)) == len(every) == 20_000


def test_random_ids_have_their_prefixes() -> None:
    ids = RandomIds()
    for made, prefix in (
        (ids.order_id(), "ord-"),
        (ids.trade_id(), "trd-"),
        (ids.webhook_id(), "wh-"),
    ):
        assert made.startswith(prefix)
        assert UUID4.fullmatch(made.removeprefix(prefix))


def test_a_forked_child_never_repeats_the_parents_ids() -> None:
    random_uuid4()  # the pool now holds unused bytes that a fork would copy
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(writer, random_uuid4().encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(pid, 0)
    child_id = os.read(reader, 64).decode()
    os.close(reader)
    assert UUID4.fullmatch(child_id)
    assert child_id != random_uuid4()  # the parent's next id, from the same bytes


def test_a_seeded_uuid4_is_a_function_of_seed_and_number_shaped_as_a_version_4_uuid() -> None:
    # BLAKE2b-128 of b"7:1" is 94ced0f979111072bd9f60ed4ad96dd7: digit 13 becomes the
    # version 4, digit 17 the variant (b keeps its low bits: b).
    assert seeded_uuid4(7, 1) == "94ced0f9-7911-4072-bd9f-60ed4ad96dd7"
    assert seeded_uuid4(7, 1) == seeded_uuid4(7, 1)
    made = {seeded_uuid4(seed, number) for seed in range(50) for number in range(1, 21)}
    assert len(made) == 1_000
    for text in made:
        assert UUID4.fullmatch(text), text
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)


def test_stamped_ids_give_the_order_id_and_one_trade_id_per_fill_from_the_seed() -> None:
    ids = StampedIds("ord-given", 7)
    assert ids.order_id() == "ord-given"
    assert [ids.trade_id(), ids.trade_id()] == [
        "trd-94ced0f9-7911-4072-bd9f-60ed4ad96dd7",
        "trd-" + seeded_uuid4(7, 2),
    ]
    again = StampedIds("ord-given", 7)  # a replay of the same command
    assert again.trade_id() == "trd-94ced0f9-7911-4072-bd9f-60ed4ad96dd7"
    assert StampedIds("ord-other", 8).trade_id() == "trd-" + seeded_uuid4(8, 1)
