"""An advantage actor-critic trained the way PyTorch's examples/reinforcement_learning/
actor_critic.py trains one, plus an entropy bonus: a shared body with a policy head (softmax
over actions) and a value head, one Adam, ``select_action`` keeping each step's log-probability
and value in ``model.saved_actions``, discounted returns computed and normalised in
``finish_episode``, smooth-L1 value loss. The environment is a corridor written here instead of
gym's CartPole: step left or right, +1 at the right end, a small cost per step.
"""
import argparse
from collections import namedtuple

import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.distributions import Categorical

parser = argparse.ArgumentParser(description="PyTorch actor-critic example on a corridor")
parser.add_argument("--gamma", type=float, default=0.99, metavar="G", help="discount factor (default: 0.99)")
parser.add_argument("--seed", type=int, default=543, metavar="N", help="random seed (default: 543)")
parser.add_argument("--episodes", type=int, default=60)
parser.add_argument("--entropy-coef", type=float, default=0.01)
parser.add_argument("--log-interval", type=int, default=10, metavar="N")
args = parser.parse_args()
torch.manual_seed(args.seed)


class Corridor:
    """Positions 0..n-1, start in the middle; action 1 moves right, 0 left; the episode ends at
    the right end (+1) or after max_steps (-0.01 per step on the way)."""

    def __init__(self, n=8, max_steps=30):
        self.n, self.max_steps = n, max_steps

    def reset(self):
        self.pos, self.t = self.n // 2, 0
        return self._obs()

    def _obs(self):
        return F.one_hot(torch.tensor(self.pos), self.n).float()

    def step(self, action):
        self.pos = min(self.n - 1, max(0, self.pos + (1 if action == 1 else -1)))
        self.t += 1
        done = self.pos == self.n - 1 or self.t >= self.max_steps
        reward = 1.0 if self.pos == self.n - 1 else -0.01
        return self._obs(), reward, done


env = Corridor()
SavedAction = namedtuple("SavedAction", ["log_prob", "value", "entropy"])


class Policy(nn.Module):
    """Implements both actor and critic in one model."""

    def __init__(self):
        super().__init__()
        self.affine1 = nn.Linear(8, 64)
        # actor's layer
        self.action_head = nn.Linear(64, 2)
        # critic's layer
        self.value_head = nn.Linear(64, 1)
        # action & reward buffer
        self.saved_actions = []
        self.rewards = []

    def forward(self, x):
        x = F.relu(self.affine1(x))
        # actor: chooses action to take from state s_t by returning probability of each action
        action_prob = F.softmax(self.action_head(x), dim=-1)
        # critic: evaluates being in the state s_t
        state_values = self.value_head(x)
        return action_prob, state_values


model = Policy()
optimizer = optim.Adam(model.parameters(), lr=3e-2)
eps = torch.finfo(torch.float32).eps


def select_action(state):
    probs, state_value = model(state)
    # create a categorical distribution over the list of probabilities of actions
    m = Categorical(probs)
    action = m.sample()
    model.saved_actions.append(SavedAction(m.log_prob(action), state_value, m.entropy()))
    return action.item()


def finish_episode():
    """Training code. Calculates actor and critic loss and performs backprop."""
    R = 0
    saved_actions = model.saved_actions
    policy_losses = []  # list to save actor (policy) loss
    value_losses = []  # list to save critic (value) loss
    returns = []  # list to save the true values

    # calculate the true value using rewards returned from the environment
    for r in model.rewards[::-1]:
        R = r + args.gamma * R
        returns.insert(0, R)
    returns = torch.tensor(returns)
    returns = (returns - returns.mean()) / (returns.std() + eps)

    for (log_prob, value, _), R in zip(saved_actions, returns):
        advantage = R - value.item()
        policy_losses.append(-log_prob * advantage)
        value_losses.append(F.smooth_l1_loss(value, torch.tensor([R])))
    entropy = torch.stack([a.entropy for a in saved_actions]).mean()

    optimizer.zero_grad()
    loss = torch.stack(policy_losses).sum() + torch.stack(value_losses).sum() - args.entropy_coef * entropy
    loss.backward()
    optimizer.step()

    del model.rewards[:]
    del model.saved_actions[:]


running_reward = 0.0
for i_episode in range(1, args.episodes + 1):
    state, ep_reward = env.reset(), 0.0
    done = False
    while not done:
        action = select_action(state)
        state, reward, done = env.step(action)
        model.rewards.append(reward)
        ep_reward += reward
    running_reward = 0.05 * ep_reward + (1 - 0.05) * running_reward
    finish_episode()
    if i_episode % args.log_interval == 0:
        print(f"Episode {i_episode}\tLast reward: {ep_reward:.2f}\tAverage reward: {running_reward:.2f}")
