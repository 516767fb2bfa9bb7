"""Where each declared machine transition is checked: the model configuration that takes it, or
why no model can take it and which test shows the transition instead.

Why a catalogue: a declared transition that no exploration takes is either dead specification
or an unchecked path, and "which run would take it?" must have an answer the report can print
(``p2psc explore`` names it next to every transition it did not take). :data:`TAKEN_BY` names the
cheapest configuration (in the order of :data:`CONFIGURATIONS`) that takes each transition; a
test explores every configuration and checks the catalogue against what was really taken, so it
cannot go stale. :data:`NOT_MODELLED` lists the rest, each with the reason and the test that
exercises it; together they cover every declared transition (also checked by that test).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "CONFIGURATIONS",
    "EXCLUDED_MACHINES",
    "NOT_MODELLED",
    "TAKEN_BY",
    "build_configuration",
    "declared_transitions",
    "unaccounted",
    "where",
]

CONFIGURATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "negotiator --protocols 2": ("negotiator", {"protocols": 2}),
    "negotiator --protocols 2 --mixed-sets": ("negotiator", {"protocols": 2, "mixed_sets": True}),
    "negotiator --protocols 2 --faults": ("negotiator", {"protocols": 2, "faults": True}),
    "mediation --peers 2": ("mediation", {"third": False}),
    "mediation --peers 2 --faults": ("mediation", {"third": False, "faults": True}),
    "mediation --peers 2 --garbage": ("mediation", {"third": False, "garbage": True}),
    "mediation --peers 2 --shutdown": ("mediation", {"third": False, "shutdown": True}),
    "mediation --limits": ("mediation", {"limits": True}),
    "mediation --peers 2 --keepalive": ("mediation", {"third": False, "keepalive": True}),
    "mediation --peers 2 --faults --keepalive": (
        "mediation",
        {"third": False, "faults": True, "keepalive": True},
    ),
    "mediation --peers 2 --faults --limits": (
        "mediation",
        {"third": False, "faults": True, "limits": True},
    ),
    "direct --stranger-budget 2": ("direct", {"budget": 2}),
    "channel --adversary-budget 1": ("channel", {"budget": 1}),
    "fleet --faults": ("fleet", {"faults": True}),
    "relay --relay-faults 1 --limits": ("relay", {"faults": 1, "limits": True}),
    "relay --relay-faults 1 --shutdown": ("relay", {"faults": 1, "shutdown": True}),
    "relay --relay-faults 1 --garbage": ("relay", {"faults": 1, "garbage": True}),
    "relay --relay-faults 2 --bridging-relay": ("relay", {"faults": 2, "evil": True}),
    "mediation --peers 2 --coordinate": ("mediation", {"third": False, "coordinate": True}),
    "mediation --peers 2 --faults --coordinate": (
        "mediation",
        {"third": False, "faults": True, "coordinate": True},
    ),
}
"""The configurations CI explores for coverage (each as ``p2psc explore`` spells it: model,
build options), cheapest first; together they take every transition of :data:`TAKEN_BY`."""

_LIMITS = "relay --relay-faults 1 --limits"
_SHUTDOWN = "relay --relay-faults 1 --shutdown"
_GARBAGE = "relay --relay-faults 1 --garbage"

TAKEN_BY: dict[tuple[str, str], str] = {
    ("MediatorSession", "awaiting_advertise --evicted--> closed"): "mediation --limits",
    ("MediatorSession", "challenged --evicted--> closed"): "mediation --limits",
    ("Rendezvous", "punching --candidate_evicted--> punching"): "direct --stranger-budget 2",
    (
        "PeerCandidate",
        "awaiting_init --handshake_init--> rejected",
    ): "direct --stranger-budget 2",
    (
        "NegotiatorMachine",
        "Initial --start [we_initiate]--> SentInitiate",
    ): "negotiator --protocols 2",
    (
        "NegotiatorMachine",
        "Initial --start [!we_initiate]--> SentKeepalive",
    ): "negotiator --protocols 2",
    (
        "NegotiatorMachine",
        "Initial --keepalive [can_buffer]--> Initial",
    ): "negotiator --protocols 2",
    ("NegotiatorMachine", "Initial --initiate [can_buffer]--> Initial"): "negotiator --protocols 2",
    ("NegotiatorMachine", "Initial --fail--> Failed"): "negotiator --protocols 2 --faults",
    ("NegotiatorMachine", "SentKeepalive --keepalive--> Sleep"): "negotiator --protocols 2",
    (
        "NegotiatorMachine",
        "SentKeepalive --initiate [is_known_protocol]--> ReceivedInitiate",
    ): "negotiator --protocols 2",
    (
        "NegotiatorMachine",
        "SentKeepalive --fail--> Failed",
    ): "negotiator --protocols 2 --mixed-sets",
    (
        "NegotiatorMachine",
        "SentInitiate --keepalive--> WaitForAcceptReject",
    ): "negotiator --protocols 2",
    (
        "NegotiatorMachine",
        "SentInitiate --initiate [is_known_protocol & same_protocol & simultaneous_runs]--> ProtocolNegotiated",  # noqa: E501
    ): "negotiator --protocols 2",
    (
        "NegotiatorMachine",
        "SentInitiate --initiate [is_known_protocol & same_protocol & !simultaneous_runs]--> Sleep",
    ): "negotiator --protocols 2",
    (
        "NegotiatorMachine",
        "SentInitiate --initiate [is_known_protocol & !same_protocol & our_protocol_wins]--> WaitForAcceptReject",  # noqa: E501
    ): "negotiator --protocols 2",
    (
        "NegotiatorMachine",
        "SentInitiate --initiate [is_known_protocol & !same_protocol & !our_protocol_wins]--> ReceivedInitiate",  # noqa: E501
    ): "negotiator --protocols 2",
    ("NegotiatorMachine", "SentInitiate --fail--> Failed"): "negotiator --protocols 2 --mixed-sets",
    (
        "NegotiatorMachine",
        "ReceivedInitiate --answer [should_accept]--> ProtocolNegotiated",
    ): "negotiator --protocols 2",
    (
        "NegotiatorMachine",
        "ReceivedInitiate --answer [!should_accept]--> Sleep",
    ): "negotiator --protocols 2",
    (
        "NegotiatorMachine",
        "WaitForAcceptReject --accept--> ProtocolNegotiated",
    ): "negotiator --protocols 2",
    ("NegotiatorMachine", "WaitForAcceptReject --reject--> Sleep"): "negotiator --protocols 2",
    (
        "NegotiatorMachine",
        "WaitForAcceptReject --fail--> Failed",
    ): "negotiator --protocols 2 --mixed-sets",
    ("NegotiatorMachine", "Sleep --keepalive [can_buffer]--> Sleep"): "negotiator --protocols 2",
    ("NegotiatorMachine", "Sleep --initiate [can_buffer]--> Sleep"): "negotiator --protocols 2",
    ("NegotiatorMachine", "Sleep --wake--> Initial"): "negotiator --protocols 2",
    ("NegotiatorMachine", "Sleep --fail--> Failed"): "negotiator --protocols 2 --mixed-sets",
    (
        "NegotiatorMachine",
        "ProtocolNegotiated --protocol_done--> Initial",
    ): "negotiator --protocols 2",
    ("MediatorSession", "awaiting_advertise --busy--> closed"): "mediation --peers 2 --shutdown",
    ("MediatorSession", "awaiting_advertise --advertise--> challenged"): "mediation --peers 2",
    ("MediatorSession", "awaiting_advertise --eof--> closed"): "mediation --peers 2 --faults",
    ("MediatorSession", "awaiting_advertise --lost--> closed"): "mediation --peers 2 --faults",
    ("MediatorSession", "awaiting_advertise --timeout--> closed"): "mediation --peers 2 --faults",
    (
        "MediatorSession",
        "awaiting_advertise --bad_input--> closed",
    ): "mediation --peers 2 --garbage",
    (
        "MediatorSession",
        "awaiting_advertise --shutdown--> closed",
    ): "mediation --peers 2 --shutdown",
    (
        "MediatorSession",
        "challenged --response [partner_waiting]--> disconnecting",
    ): "mediation --peers 2",
    ("MediatorSession", "challenged --response [registry_full]--> closed"): "mediation --limits",
    ("MediatorSession", "challenged --response--> waiting"): "mediation --peers 2",
    ("MediatorSession", "challenged --eof--> closed"): "mediation --peers 2 --faults",
    ("MediatorSession", "challenged --lost--> closed"): "mediation --peers 2 --faults",
    ("MediatorSession", "challenged --timeout--> closed"): "mediation --peers 2 --faults",
    ("MediatorSession", "challenged --bad_input--> closed"): "mediation --peers 2 --garbage",
    ("MediatorSession", "challenged --shutdown--> closed"): "mediation --peers 2 --shutdown",
    ("MediatorSession", "waiting --partner_arrived--> confirming"): "mediation --peers 2",
    ("MediatorSession", "waiting --eof--> closed"): "mediation --peers 2",
    ("MediatorSession", "waiting --lost--> closed"): "mediation --peers 2 --faults",
    ("MediatorSession", "waiting --timeout--> closed"): "mediation --peers 2 --faults",
    ("MediatorSession", "waiting --bad_input--> closed"): "mediation --peers 2 --garbage",
    ("MediatorSession", "waiting --shutdown--> closed"): "mediation --peers 2 --shutdown",
    ("MediatorSession", "disconnecting --partner_lost--> closed"): "mediation --peers 2",
    ("MediatorSession", "disconnecting --eof--> closed"): "mediation --peers 2",
    ("MediatorSession", "disconnecting --lost--> closed"): "mediation --peers 2 --faults",
    ("MediatorSession", "disconnecting --timeout--> closed"): "mediation --peers 2 --faults",
    ("MediatorSession", "disconnecting --bad_input--> closed"): "mediation --peers 2 --garbage",
    ("MediatorSession", "disconnecting --shutdown--> closed"): "mediation --peers 2 --shutdown",
    ("MediatorSession", "confirming --partner_confirmed--> closed"): "mediation --peers 2",
    ("MediatorSession", "confirming --partner_lost--> closed"): "mediation --peers 2 --faults",
    ("MediatorSession", "confirming --eof--> closed"): "mediation --peers 2",
    ("MediatorSession", "confirming --lost--> closed"): "mediation --peers 2 --faults",
    ("MediatorSession", "confirming --timeout--> closed"): "mediation --peers 2 --faults",
    ("MediatorSession", "confirming --bad_input--> closed"): "mediation --peers 2 --garbage",
    ("MediatorSession", "confirming --shutdown--> closed"): "mediation --peers 2 --shutdown",
    ("Registration", "idle --start--> connecting_mediator"): "mediation --peers 2",
    ("Registration", "connecting_mediator --mediator_opened--> advertising"): "mediation --peers 2",
    ("Registration", "connecting_mediator --timeout--> failed"): "mediation --peers 2 --faults",
    ("Registration", "connecting_mediator --lost--> failed"): "mediation --peers 2 --faults",
    (
        "Registration",
        "advertising --advertise_challenge [challenge_opens]--> waiting",
    ): "mediation --peers 2",
    (
        "Registration",
        "advertising --advertise_retry [can_retry]--> backing_off",
    ): "mediation --limits",
    ("Registration", "advertising --advertise_retry--> failed"): "mediation --peers 2 --shutdown",
    ("Registration", "advertising --advertise_abort--> failed"): "mediation --peers 2 --faults",
    ("Registration", "advertising --timeout--> failed"): "mediation --peers 2 --faults",
    ("Registration", "advertising --lost--> failed"): "mediation --peers 2 --faults",
    ("Registration", "advertising --malformed--> failed"): "mediation --peers 2 --garbage",
    ("Registration", "waiting --advertise_retry [can_retry]--> backing_off"): "mediation --limits",
    ("Registration", "waiting --advertise_retry--> failed"): "mediation --limits",
    ("Registration", "waiting --advertise_abort--> failed"): "mediation --peers 2 --faults",
    (
        "Registration",
        "waiting --peer_identification [version_supported & addresses_usable]--> client",
    ): "mediation --peers 2",
    (
        "Registration",
        "waiting --peer_disconnect [addresses_usable & can_listen]--> peer",
    ): "mediation --peers 2",
    ("Registration", "waiting --timeout--> failed"): "mediation --peers 2",
    (
        "Registration",
        "waiting --keepalive_due [mediator_answered]--> waiting",
    ): "mediation --peers 2 --keepalive",
    (
        "Registration",
        "waiting --pong [pong_expected]--> waiting",
    ): "mediation --peers 2 --keepalive",
    (
        "MediatorSession",
        "waiting --ping [ping_allowed]--> waiting",
    ): "mediation --peers 2 --keepalive",
    (
        "MediatorSession",
        "confirming --ping [ping_allowed]--> confirming",
    ): "mediation --peers 2 --keepalive",
    # An early timer (a delay elsewhere) brings a Ping due while the last one, or
    # PeerDisconnect, is in flight: the peer sees silence, a Ping crosses PeerDisconnect, or two
    # Pings arrive less than MIN_PING_GAP apart.
    (
        "Registration",
        "waiting --keepalive_due--> failed",
    ): "mediation --peers 2 --faults --keepalive",
    ("MediatorSession", "waiting --ping--> closed"): "mediation --peers 2 --faults --keepalive",
    (
        "MediatorSession",
        "disconnecting --ping [ping_allowed]--> disconnecting",
    ): "mediation --peers 2 --faults --keepalive",
    ("Registration", "waiting --lost--> failed"): "mediation --peers 2 --faults",
    ("Registration", "waiting --malformed--> failed"): "mediation --peers 2 --garbage",
    ("Registration", "backing_off --retry_due--> connecting_mediator"): "mediation --limits",
    ("Registration", "backing_off --timeout--> failed"): "mediation --peers 2 --faults --limits",
    ("Rendezvous", "punching --attempt_due--> punching"): "mediation --peers 2",
    ("Rendezvous", "punching --attempt_failed--> punching"): "mediation --peers 2",
    ("Rendezvous", "punching --direct_opened--> punching"): "mediation --peers 2",
    ("Rendezvous", "punching --candidate_rejected--> punching"): "mediation --peers 2 --faults",
    ("Rendezvous", "punching --confirmed--> established"): "mediation --peers 2",
    ("Rendezvous", "punching --timeout--> failed"): "mediation --peers 2",
    (
        "ClientCandidate",
        "awaiting_response --handshake_response [response_valid]--> confirmed",
    ): "mediation --peers 2",
    (
        "ClientCandidate",
        "awaiting_response --bad_message--> rejected",
    ): "mediation --peers 2 --garbage",
    ("ClientCandidate", "awaiting_response --silent--> rejected"): "mediation --peers 2 --faults",
    ("ClientCandidate", "awaiting_response --closed--> rejected"): "mediation --peers 2 --faults",
    (
        "PeerCandidate",
        "awaiting_init --handshake_init [init_valid]--> answered",
    ): "mediation --peers 2",
    ("PeerCandidate", "awaiting_init --bad_message--> rejected"): "mediation --peers 2 --garbage",
    ("PeerCandidate", "awaiting_init --silent--> rejected"): "mediation --peers 2 --faults",
    ("PeerCandidate", "awaiting_init --closed--> rejected"): "mediation --peers 2 --faults",
    ("PeerCandidate", "answered --first_record [record_valid]--> confirmed"): "mediation --peers 2",
    ("PeerCandidate", "answered --first_record--> rejected"): "mediation --peers 2 --garbage",
    ("PeerCandidate", "answered --silent--> rejected"): "mediation --peers 2 --faults",
    ("PeerCandidate", "answered --closed--> rejected"): "mediation --peers 2 --faults",
    ("RelayLeg", "answered --abort--> failed"): _LIMITS,
    ("RelayLeg", "answered --bad_message--> failed"): _GARBAGE,
    ("RelayLeg", "answered --connected--> spliced"): _SHUTDOWN,
    ("RelayLeg", "answered --lost--> failed"): _LIMITS,
    ("RelayLeg", "answered --timeout--> failed"): _LIMITS,
    ("RelayLeg", "connecting --lost--> failed"): _SHUTDOWN,
    ("RelayLeg", "connecting --opened--> requesting"): _LIMITS,
    ("RelayLeg", "connecting --timeout--> failed"): _LIMITS,
    ("RelayLeg", "requesting --abort--> failed"): _LIMITS,
    ("RelayLeg", "requesting --bad_message--> failed"): _GARBAGE,
    ("RelayLeg", "requesting --challenge [challenge_opens]--> answered"): _LIMITS,
    ("RelayLeg", "requesting --lost--> failed"): _LIMITS,
    ("RelayLeg", "requesting --timeout--> failed"): _LIMITS,
    ("Rendezvous", "punching --relay_due--> relaying"): _LIMITS,
    ("Rendezvous", "relaying --candidate_rejected--> relaying"): _SHUTDOWN,
    ("Rendezvous", "relaying --confirmed [relayed_path]--> relayed"): _SHUTDOWN,
    ("Rendezvous", "relaying --confirmed--> established"): _LIMITS,
    ("Rendezvous", "relaying --direct_opened--> relaying"): _LIMITS,
    ("Rendezvous", "relaying --relay_failed--> failed"): _LIMITS,
    ("Rendezvous", "relaying --relay_progress--> relaying"): _LIMITS,
    ("Rendezvous", "relaying --relay_spliced--> relaying"): _SHUTDOWN,
    ("Rendezvous", "relaying --timeout--> failed"): _LIMITS,
    # The relay server's machine: the real RelayCore is the relay model's Relay actor.
    ("RelaySession", "awaiting_request --bad_input--> closed"): _GARBAGE,
    ("RelaySession", "awaiting_request --eof--> closed"): _LIMITS,
    ("RelaySession", "awaiting_request --lost--> closed"): _LIMITS,
    ("RelaySession", "awaiting_request --request [!admitted]--> closed"): _LIMITS,
    ("RelaySession", "awaiting_request --request [!version_supported]--> closed"): _GARBAGE,
    ("RelaySession", "awaiting_request --request [self_pairing]--> closed"): _GARBAGE,
    ("RelaySession", "awaiting_request --request--> challenged"): _LIMITS,
    ("RelaySession", "awaiting_request --shutdown--> closed"): _SHUTDOWN,
    ("RelaySession", "awaiting_request --timeout--> closed"): _LIMITS,
    ("RelaySession", "challenged --bad_input--> closed"): _GARBAGE,
    ("RelaySession", "challenged --eof--> closed"): _LIMITS,
    ("RelaySession", "challenged --lost--> closed"): _LIMITS,
    ("RelaySession", "challenged --response [!nonce_matches]--> closed"): _GARBAGE,
    ("RelaySession", "challenged --response [partner_waiting]--> spliced"): _SHUTDOWN,
    ("RelaySession", "challenged --response--> waiting"): _LIMITS,
    ("RelaySession", "challenged --shutdown--> closed"): _SHUTDOWN,
    ("RelaySession", "challenged --timeout--> closed"): _LIMITS,
    ("RelaySession", "spliced --eof--> closed"): _SHUTDOWN,
    ("RelaySession", "spliced --limit_reached--> closed"): _SHUTDOWN,
    ("RelaySession", "spliced --lost--> closed"): _SHUTDOWN,
    ("RelaySession", "spliced --partner_gone--> closed"): _SHUTDOWN,
    ("RelaySession", "spliced --shutdown--> closed"): _SHUTDOWN,
    ("RelaySession", "waiting --bad_input--> closed"): _GARBAGE,
    ("RelaySession", "waiting --eof--> closed"): _LIMITS,
    ("RelaySession", "waiting --lost--> closed"): _LIMITS,
    ("RelaySession", "waiting --partner_arrived--> spliced"): _SHUTDOWN,
    ("RelaySession", "waiting --shutdown--> closed"): _SHUTDOWN,
    ("RelaySession", "waiting --timeout--> closed"): _LIMITS,
    ("ChannelMachine", "open --close_sent--> sent_close"): "channel --adversary-budget 1",
    (
        "ChannelMachine",
        "received_close --close_sent--> both_closed",
    ): "channel --adversary-budget 1",
    ("ChannelMachine", "open --close_received--> received_close"): "channel --adversary-budget 1",
    (
        "ChannelMachine",
        "sent_close --close_received--> both_closed",
    ): "channel --adversary-budget 1",
    (
        "ChannelMachine",
        "received_close --transport_ended--> received_close",
    ): "channel --adversary-budget 1",
    (
        "ChannelMachine",
        "both_closed --transport_ended--> both_closed",
    ): "channel --adversary-budget 1",
    ("ChannelMachine", "open --transport_cut--> failed"): "channel --adversary-budget 1",
    ("ChannelMachine", "sent_close --transport_cut--> failed"): "channel --adversary-budget 1",
    ("ChannelMachine", "open --bad_record--> failed"): "channel --adversary-budget 1",
    ("ChannelMachine", "sent_close --bad_record--> failed"): "channel --adversary-budget 1",
    ("ChannelMachine", "received_close --bad_record--> failed"): "channel --adversary-budget 1",
    ("ChannelMachine", "both_closed --bad_record--> failed"): "channel --adversary-budget 1",
    (
        "MediatorSession",
        "confirming --partner_confirmed [coordinated]--> coordinating",
    ): "mediation --peers 2 --coordinate",
    ("MediatorSession", "coordinating --eof--> closed"): "mediation --peers 2 --coordinate",
    (
        "MediatorSession",
        "coordinating --lost--> closed",
    ): "mediation --peers 2 --faults --coordinate",
    (
        "MediatorSession",
        "coordinating --partner_done--> coordinating",
    ): "mediation --peers 2 --coordinate",
    (
        "MediatorSession",
        "coordinating --partner_lost--> closed",
    ): "mediation --peers 2 --coordinate",
    (
        "MediatorSession",
        "coordinating --ping [ping_allowed]--> coordinating",
    ): "mediation --peers 2 --faults --coordinate",
    (
        "MediatorSession",
        "coordinating --status [reports_done]--> closed",
    ): "mediation --peers 2 --coordinate",
    (
        "MediatorSession",
        "coordinating --timeout--> closed",
    ): "mediation --peers 2 --faults --coordinate",
    (
        "MediatorSession",
        "disconnecting --status [confirms]--> coordinating",
    ): "mediation --peers 2 --coordinate",
    (
        "Rendezvous",
        "punching --coordinate_due--> punching",
    ): "mediation --peers 2 --faults --coordinate",
    ("Rendezvous", "punching --coordination_over--> punching"): "mediation --peers 2 --coordinate",
    (
        "Rendezvous",
        "punching --mediator_pong--> punching",
    ): "mediation --peers 2 --faults --coordinate",
    ("Rendezvous", "punching --partner_lost--> failed"): "mediation --peers 2 --coordinate",
}
"""(machine, transition) -> the first configuration of :data:`CONFIGURATIONS` that takes it."""

_ROGUE_MEDIATOR = "needs a Mediator that breaks the protocol (the model runs the real MediatorCore)"

NOT_MODELLED: dict[tuple[str, str], tuple[str, str]] = {
    ("MediatorSession", "coordinating --bad_input--> closed"): (
        "needs a peer that breaks the protocol while coordinating (the model's peers conform)",
        "tests/test_liveness.py::test_garbage_or_a_ping_flood_while_coordinating_is_malformed_and_the_partner_is_told",
    ),
    ("MediatorSession", "coordinating --ping--> closed"): (
        "needs Pings faster than the floor (the model's peers ping every second)",
        "tests/test_liveness.py::test_garbage_or_a_ping_flood_while_coordinating_is_malformed_and_the_partner_is_told",
    ),
    ("MediatorSession", "coordinating --shutdown--> closed"): (
        "needs --shutdown with --coordinate (no CI configuration: the same path as in "
        "every other pairing state)",
        "tests/test_liveness.py::test_a_shutdown_while_coordinating_is_no_partner_loss",
    ),
    ("MediatorSession", "coordinating --status--> closed"): (
        "needs a peer that sends a second PUNCHING (the model's peers conform)",
        "tests/test_liveness.py::test_a_status_in_a_wrong_state_is_malformed",
    ),
    ("MediatorSession", "disconnecting --status--> closed"): (
        "needs a Peer that reports done before it confirms, or a Status in an "
        "uncoordinated pairing",
        "tests/test_liveness.py::test_a_status_in_a_wrong_state_is_malformed",
    ),
    ("MediatorSession", "waiting --registry_lost--> closed"): (
        "only a fleet's shared registry (Redis) can lose a registration (it expired or the "
        "store restarted); the mediation models use one process's registry",
        "tests/test_fleet.py::test_redis_restart_waiting_registration_gets_retry",
    ),
    ("NegotiatorMachine", "ReceivedInitiate --fail--> Failed"): (
        "the core leaves ReceivedInitiate within the call that entered it, so no event can "
        "find it there (no explored side snapshot is ever in ReceivedInitiate)",
        "tests/test_explorer_coverage.py::test_received_initiate_is_never_at_rest",
    ),
    ("NegotiatorMachine", "ProtocolNegotiated --fail--> Failed"): (
        "the model hands the connection to the negotiated protocol, whose failure it does not run",
        "tests/test_negotiator_core.py::test_fail_from_outside_reports_the_reason",
    ),
    ("MediatorSession", "awaiting_advertise --advertise [!version_supported]--> closed"): (
        "needs a client that advertises another protocol version (the model's peers conform)",
        "tests/test_mediator_core.py::test_advertise_version_field_mismatch",
    ),
    ("MediatorSession", "awaiting_advertise --advertise [self_pairing]--> closed"): (
        "needs a client that asks for its own key",
        "tests/test_mediator_core.py::test_self_pairing_is_refused",
    ),
    ("MediatorSession", "awaiting_advertise --advertise [!key_usable]--> closed"): (
        "needs a client that advertises a degenerate key",
        "tests/test_mediator_core.py::test_degenerate_key_is_refused_without_crash",
    ),
    ("MediatorSession", "challenged --response [!nonce_matches]--> closed"): (
        "needs a client that answers the challenge wrongly (the model's crypto is perfect)",
        "tests/test_mediator_core.py::test_wrong_nonce_fails_identity_check",
    ),
    ("MediatorSession", "challenged --response [duplicate]--> waiting"): (
        "needs two registrations of the same pair of keys (each model peer has its own key)",
        "tests/test_mediator_core.py::test_duplicate_registration_newer_replaces_older",
    ),
    ("MediatorSession", "waiting --replaced--> closed"): (
        "needs two registrations of the same pair of keys (each model peer has its own key)",
        "tests/test_mediator_core.py::test_duplicate_registration_newer_replaces_older",
    ),
    ("Registration", "advertising --advertise_challenge--> failed"): (
        _ROGUE_MEDIATOR + ": a challenge not sealed to our key",
        "tests/test_peer_core.py::test_challenge_sealed_to_another_key",
    ),
    ("Registration", "waiting --peer_identification--> failed"): (
        _ROGUE_MEDIATOR + ": another version or an unusable address",
        "tests/test_peer_core.py::test_unsupported_version_in_peer_identification",
    ),
    ("Registration", "waiting --peer_disconnect--> failed"): (
        _ROGUE_MEDIATOR + ": an unusable address",
        "tests/test_peer_core.py::test_addresses_that_cannot_be_a_partner_are_refused",
    ),
    ("Rendezvous", "punching --listen_failed [can_go_on]--> punching"): (
        "the modelled network never fails a listener",
        "tests/test_peer_core.py::test_client_goes_on_when_its_listener_fails",
    ),
    ("Rendezvous", "punching --listen_failed--> failed"): (
        "the modelled network never fails a listener",
        "tests/test_peer_core.py::test_listener_that_cannot_bind",
    ),
    ("ClientCandidate", "awaiting_response --handshake_response--> rejected"): (
        "needs a forged HandshakeResponse (the stranger actor of models/direct_model.py)",
        "tests/test_peer_core.py::test_client_challenges_every_candidate_and_commits_to_the_"
        "first_valid_answer",
    ),
    ("MediatorSession", "awaiting_advertise --advertise [!challenge_budget]--> closed"): (
        "needs more Advertises from one origin than its challenge budget (the model's budget "
        "is never spent)",
        "tests/test_mediator_admission.py::test_challenge_budget_bounds_seals_per_origin",
    ),
    ("Registration", "waiting --pong--> failed"): (
        _ROGUE_MEDIATOR + ": a Pong nobody asked for",
        "tests/test_keepalive.py::test_a_pong_nobody_asked_for_is_a_protocol_error",
    ),
    **{
        ("MediatorSession", f"{state} --ping--> closed"): (
            "needs Pings less than 0.5 s apart (the model's peers ping every 5 s)",
            "tests/test_keepalive.py::test_pings_faster_than_the_floor_are_refused",
        )
        for state in ("disconnecting", "confirming")
    },
    ("MediatorSession", "awaiting_advertise --advertise [!transport_allowed]--> closed"): (
        "needs --require-tls and a clear client (the model has no TLS)",
        "tests/test_tls.py::test_require_tls_refuses_clear_version_1",
    ),
    ("RelayLeg", "requesting --challenge--> failed"): (
        "needs a relay whose challenge is not sealed to our key",
        "tests/test_relay_peer.py::test_a_challenge_sealed_for_the_mediator_does_not_open_at_the_relay",
    ),
    ("Rendezvous", "relaying --candidate_evicted--> relaying"): (
        "needs strangers on the Peer's listener beyond its bounds (the direct model's stranger)",
        "tests/test_relay_peer.py::test_strangers_on_the_peers_listener_are_evicted_while_relaying",
    ),
    ("Rendezvous", "relaying --listen_failed--> relaying"): (
        "the modelled network never fails a listener",
        "tests/test_relay_peer.py::test_the_peers_listener_failing_while_relaying_is_not_fatal",
    ),
    ("RelaySession", "awaiting_request --request [!challenge_budget]--> closed"): (
        "needs more RelayRequests from one address than its challenge budget (each model actor "
        "has an address of its own and asks once; like the Mediator's, the relay's snapshot "
        "leaves the budgets out)",
        "tests/test_relay_core.py::test_challenges_per_address_are_budgeted",
    ),
    ("RelaySession", "awaiting_request --request [!key_usable]--> closed"): (
        "needs a key no nonce can be sealed to: the model's symbolic crypto seals to any 32 "
        "bytes (real HPKE refuses a low-order point)",
        "tests/test_relay_core.py::test_a_key_no_nonce_can_be_sealed_to_is_refused",
    ),
    ("RelaySession", "challenged --response [!key_admitted]--> closed"): (
        "needs more authenticated relay connections of one key than max_per_key (each model "
        "peer opens one leg; a stranger cannot prove a key)",
        "tests/test_relay_core.py::test_limits_per_key_per_address_in_total_and_pending",
    ),
    ("RelaySession", "waiting --replaced--> closed"): (
        "needs a second authenticated leg of the same key and pairing (the model's peers open "
        "one leg each; a stranger cannot prove a key)",
        "tests/test_relay_core.py::test_a_reconnecting_key_replaces_its_waiting_leg",
    ),
}
"""(machine, transition) -> (why no shipped model takes it, the test that exercises it)."""


EXCLUDED_MACHINES: dict[str, str] = {
    "LegacyPeerMachine": (
        "wave 1's protocol version 0 peer (p2psc.legacy, INSECURE, kept for the C++ "
        "interoperability tests): no model runs it; tests/test_legacy_peer.py and "
        "tests/test_legacy_cpp_emulation.py exercise it"
    ),
}
"""Registered machines (:data:`p2psc.machines.MACHINES`) the catalogue does not cover, with
why. Every other registered machine must have each declared transition in :data:`TAKEN_BY` or
:data:`NOT_MODELLED`: a machine added without entries fails the catalogue test loudly."""


def declared_transitions() -> set[tuple[str, str]]:
    """(machine, transition) of every registered machine but :data:`EXCLUDED_MACHINES`."""
    from p2psc.machines import machine_classes
    from p2psc.machines.compiler import compile_machine

    out: set[tuple[str, str]] = set()
    for name, cls in machine_classes().items():
        if name in EXCLUDED_MACHINES:
            continue
        table = compile_machine(cls)
        out |= {(table.name, str(transition)) for transition in table.transitions}
    return out


def unaccounted() -> str | None:
    """None when the catalogue accounts for every declared transition exactly once, else a
    message naming every declared transition it misses, every entry that names no declared
    transition (renamed or removed) and every transition listed twice."""
    declared = declared_transitions()
    listed = set(TAKEN_BY) | set(NOT_MODELLED)
    problems = []
    missing = sorted(declared - listed)
    if missing:
        problems.append(
            "declared transitions the coverage catalogue (models/coverage.py) does not account "
            "for: add each to TAKEN_BY (the first configuration of CONFIGURATIONS that takes "
            "it) or to NOT_MODELLED (why no model takes it, and the test that exercises it), or "
            "the machine to EXCLUDED_MACHINES:\n"
            + "\n".join(f"  {machine}: {transition}" for machine, transition in missing)
        )
    stale = sorted(listed - declared)
    if stale:
        problems.append(
            "catalogue entries that name no declared transition (renamed or removed?):\n"
            + "\n".join(f"  {machine}: {transition}" for machine, transition in stale)
        )
    twice = sorted(set(TAKEN_BY) & set(NOT_MODELLED))
    if twice:
        problems.append(
            "listed both as taken and as not modelled:\n"
            + "\n".join(f"  {machine}: {transition}" for machine, transition in twice)
        )
    unknown = sorted(set(TAKEN_BY.values()) - set(CONFIGURATIONS))
    if unknown:
        problems.append(f"TAKEN_BY names configurations that CONFIGURATIONS lacks: {unknown}")
    return "\n".join(problems) or None


def where(machine: str, transition: str) -> str | None:
    """Where an untaken transition is checked, for the coverage report (None: unknown)."""
    label = TAKEN_BY.get((machine, transition))
    if label is not None:
        return f"taken by `p2psc explore {label}`"
    entry = NOT_MODELLED.get((machine, transition))
    if entry is not None:
        return f"not modelled: {entry[0]}; tested by {entry[1]}"
    return None


def build_configuration(label: str) -> Any:
    """A fresh model for one of :data:`CONFIGURATIONS`."""
    import importlib

    module, options = CONFIGURATIONS[label]
    build: Callable[..., Any] = importlib.import_module(f"p2psc.models.{module}_model").build
    return build(**options)
