%% The Erlang side of bench/node.sh: two distributed Erlang nodes on
%% loopback (see run_node.sh, which starts epmd and both nodes).
%%
%% Node b runs `peer': a gen_server (this module) that echoes calls and
%% counts plain `!' messages. Node a runs `main <rtt|tput> T N B':
%%
%%   rtt   N sequential gen_server:call(Server, {echo, I}) to b's server
%%   tput  N `Server ! {msg, I}', then gen_server:call(Server, done), which
%%         b answers with its count (the ack of the last)
%%
%% after 1,000 warm-up calls (the connection is set up before). Prints
%%   bench=<rtt|tput> impl=erlang threads=T n=N seconds=S check=C <rate>
%% and halts 0 when C is N. b halts when a goes down.
-module(troupe_node_bench).
-behaviour(gen_server).

-export([main/1, peer/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(WARMUP, 1000).
-define(TIMEOUT, 30000).
-define(TIME_LIMIT_MS, 120000).

%%--------------------------------------------------------------- b

peer([A]) ->
    ok = net_kernel:monitor_nodes(true),
    {ok, _} = gen_server:start({local, bench_server}, ?MODULE, 0, []),
    ANode = list_to_atom(A),
    %% Up to the time limit: end when a goes down (it is done).
    erlang:send_after(?TIME_LIMIT_MS, self(), time_limit),
    peer_wait(ANode).

peer_wait(ANode) ->
    receive
        {nodedown, ANode} -> halt(0);
        time_limit -> halt(1);
        _ -> peer_wait(ANode)
    end.

init(Count) -> {ok, Count}.

handle_call({echo, V}, _From, Count) -> {reply, V, Count};
handle_call(done, _From, Count) -> {reply, Count, 0};
handle_call(pid, _From, Count) -> {reply, self(), Count}.

handle_cast(_Msg, Count) -> {noreply, Count}.

%% Counted only in order: a lost or reordered message shows.
handle_info({msg, Count}, Count) -> {noreply, Count + 1};
handle_info(_Other, Count) -> {noreply, Count}.

%%--------------------------------------------------------------- a

main([Bench, Threads, NStr, B]) ->
    erlang:send_after(?TIME_LIMIT_MS, self(), time_limit),
    N = list_to_integer(NStr),
    BNode = list_to_atom(B),
    ok = wait_for(BNode, 1000),
    Server = gen_server:call({bench_server, BNode}, pid, ?TIMEOUT),
    warm(Server, ?WARMUP),
    T0 = erlang:monotonic_time(nanosecond),
    Check = case Bench of
                "rtt" -> rtt(Server, 0, N, 0);
                "tput" -> tput(Server, 0, N)
            end,
    T1 = erlang:monotonic_time(nanosecond),
    Secs = (T1 - T0) / 1.0e9,
    Rate = case Bench of
               "rtt" -> io_lib:format("us_per_rtt=~.2f", [Secs * 1.0e6 / N]);
               "tput" -> io_lib:format("msgs_per_s=~b", [round(N / Secs)])
           end,
    io:format("bench=~s impl=erlang threads=~s n=~b seconds=~.6f check=~b ~s~n",
              [Bench, Threads, N, Secs, Check, Rate]),
    case Check =:= N of
        true -> halt(0);
        false ->
            io:format(standard_error, "~s: check failed: ~b of ~b~n", [Bench, Check, N]),
            halt(1)
    end;
main(_) ->
    io:format(standard_error, "usage: troupe_node_bench main <rtt|tput> T N BNODE~n", []),
    halt(2).

%% b's server is registered once b has started: ask until it is.
wait_for(_BNode, 0) -> {error, no_peer};
wait_for(BNode, Tries) ->
    case net_adm:ping(BNode) of
        pong ->
            case rpc:call(BNode, erlang, whereis, [bench_server]) of
                Pid when is_pid(Pid) -> ok;
                _ -> timer:sleep(10), wait_for(BNode, Tries - 1)
            end;
        pang -> timer:sleep(10), wait_for(BNode, Tries - 1)
    end.

warm(_Server, 0) -> ok;
warm(Server, K) ->
    K = gen_server:call(Server, {echo, K}, ?TIMEOUT),
    warm(Server, K - 1).

rtt(_Server, N, N, Check) -> Check;
rtt(Server, I, N, Check) ->
    case gen_server:call(Server, {echo, I}, ?TIMEOUT) of
        I -> rtt(Server, I + 1, N, Check + 1);
        _ -> rtt(Server, I + 1, N, Check)
    end.

tput(Server, N, N) -> gen_server:call(Server, done, ?TIMEOUT);
tput(Server, I, N) ->
    Server ! {msg, I},
    tput(Server, I + 1, N).
