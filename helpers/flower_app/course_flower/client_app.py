"""The ClientApp: what a SuperNode does with the server's messages.

The node's data is a file on its own disk (``partition-file`` in the SuperNode's
``--node-config``); its users' private vectors and biases live in the node's state
(``context.state``) between rounds and never travel. Flower starts a fresh ClientApp
process for every message, so both are read again each time.
"""

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from helpers import federated as fl
from helpers import flower_rounds as fr

app = ClientApp()


@app.query()
def describe(msg: Message, context: Context) -> Message:
    """Answer the server's first question: which users this node holds and Σ of their ratings."""
    description = fr.describe(fr.load_partition(context.node_config["partition-file"]))
    return Message(RecordDict({"arrays": ArrayRecord(description.arrays()),
                               "metrics": MetricRecord(description.metrics())}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round on this node: evaluate θ_t on all its users, train the sampled ones."""
    federation = fr.load_partition(context.node_config["partition-file"])
    request = fr.Request.decode(msg.content["arrays"].to_numpy_ndarrays(), dict(msg.content["config"]))
    if "private" in context.state:
        user_vec, user_bias = context.state["private"].to_numpy_ndarrays()
        store = fl.ClientStore(np.array(user_vec), np.array(user_bias))
    else:
        store = fr.start_private(federation, request.table.shape[1] - 1, request.init_seed)
    reply = fr.answer(federation, store, request)
    context.state["private"] = ArrayRecord([store.user_vec, store.user_bias])
    return Message(RecordDict({"arrays": ArrayRecord(reply.arrays()), "metrics": MetricRecord(reply.metrics())}),
                   reply_to=msg)
