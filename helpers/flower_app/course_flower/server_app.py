"""The ServerApp: lesson 03's rounds (:func:`helpers.flower_rounds.train_on_nodes`) over Flower's grid.

It waits for ``min-nodes`` SuperNodes, then runs the rounds (FedAvg, or DP-FedAvg when ``dp``
is set); after every round it appends one
JSON line to ``events-file`` (the launcher in the notebook reads them for its progress bar and
live curve). A failure is written there with its traceback before the run ends.
"""

import json
import time
import traceback

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from helpers import fedcore as fc
from helpers import flower_rounds as fr
from helpers import privacy as pv
from helpers.fedcore import FedConfig

app = ServerApp()


class GridLink:
    """:class:`helpers.flower_rounds.Link` over Flower's grid: one message per node, replies
    awaited at most ``timeout`` seconds; a node that errs or stays silent has no reply."""

    def __init__(self, grid: Grid, timeout: float):
        self.grid, self.timeout = grid, timeout

    def node_ids(self) -> list[int]:
        return sorted(self.grid.get_node_ids())

    def _send(self, contents: dict, message_type: str) -> dict:
        messages = [Message(content, dst_node_id=node, message_type=message_type) for node, content in contents.items()]
        # grid.send_and_receive polls for replies every 3 s; polling every 0.2 s takes up to ~3 s less per exchange
        waiting = set(self.grid.push_messages(messages))
        received, deadline = [], time.monotonic() + self.timeout
        while waiting and time.monotonic() < deadline:
            for reply in self.grid.pull_messages(list(waiting)):
                received.append(reply)
                waiting.discard(reply.metadata.reply_to_message_id)
            if waiting:
                time.sleep(0.2)
        replies = {}
        for reply in received:
            if reply.has_error():
                print(f"node {reply.metadata.src_node_id} failed: {reply.error.reason}", flush=True)
            else:
                replies[reply.metadata.src_node_id] = reply.content
        return replies

    def describe(self, node_ids):
        replies = self._send({node: RecordDict({"config": ConfigRecord({})}) for node in node_ids}, MessageType.QUERY)
        return {node: fr.Description.decode(c["arrays"].to_numpy_ndarrays(), dict(c["metrics"])) for node, c in replies.items()}

    def exchange(self, requests):
        replies = self._send({node: RecordDict({"arrays": ArrayRecord(r.arrays()), "config": ConfigRecord(r.settings())})
                              for node, r in requests.items()}, MessageType.TRAIN)
        return {node: fr.Reply.decode(c["arrays"].to_numpy_ndarrays(), dict(c["metrics"])) for node, c in replies.items()}


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = context.run_config
    events = fr.EventLog(settings["events-file"])
    try:
        deadline = time.monotonic() + float(settings["node-wait"])
        while len(grid.get_node_ids()) < int(settings["min-nodes"]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(grid.get_node_ids())} of the {settings['min-nodes']} nodes needed "
                                   f"connected within {settings['node-wait']} s")
            time.sleep(0.5)
        config = FedConfig(**json.loads(settings["fed-config"]))
        algorithm, clip_norm = fc.FEDAVG, 0.0
        if settings["dp"]:  # DP-FedAvg (lesson 10): Poisson sampling, clipping on the nodes, noise here
            dp = json.loads(settings["dp"])
            rate = dp.pop("sampling_rate")
            dp = pv.DPConfig(**dp)
            algorithm, clip_norm = pv.dp_fedavg(dp, rate, clipped_by_clients=True), dp.clip_norm
        fr.train_on_nodes(GridLink(grid, float(settings["round-timeout"])), config, int(settings["rounds"]),
                          int(settings["dim"]), int(settings["init-seed"]), algorithm, clip_norm, on_round=events.round)
        events.write({"event": "done"})
    except BaseException:
        events.write({"event": "error", "traceback": traceback.format_exc()})
        raise
