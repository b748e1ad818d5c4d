%% Peer benchmarks for troupe, written in plain Erlang/OTP.
%%
%% Usage (see run.sh):
%%   erl -noshell +S T:T +P 2000000 -pa BUILD -run troupe_bench main BENCH T [VARIANT]
%%   erl -noshell -pa BUILD -run troupe_bench main variants BENCH
%%
%% Prints one line:
%%   bench=<name> impl=erlang variant=<v> threads=<t> n=<n> seconds=<s> check=<c>
%% and halts with status 0 when the checksum is right, 1 otherwise.
%% `variants BENCH' prints the workload's variants, the default first.
%%
%% The workloads are defined in /work/shared/BENCH.md (copied into the
%% project's bench docs). The timed part runs from just before the first
%% spawn until the result is known.
-module(troupe_bench).
-behaviour(gen_server).

-export([main/1]).
%% The continuation of a hibernating idle process.
-export([idle_wait/1]).
%% gen_server callbacks for the `ask' counter server.
-export([init/1, handle_call/3, handle_cast/2]).

-define(PINGPONG_ROUND_TRIPS, 1000000).
-define(RING_SIZE, 10000).
-define(RING_HOPS, 1000000).
-define(SKYNET_LEAVES, 1000000).
-define(FANIN_PRODUCERS, 4).
-define(FANIN_PER_PRODUCER, 1000000).
-define(FANIN_CAPACITY, 1024).
-define(ASK_REQUESTS, 1000000).
-define(IDLE_ACTORS, 1000000).
-define(BIG_PAIRS, 1000).
-define(BIG_ROUNDS, 4000).

%%--------------------------------------------------------------------
%% Entry point
%%--------------------------------------------------------------------

main(["variants", Bench]) ->
    io:format("~s~n", [lists:join(" ", variants(Bench))]),
    halt(0);
main([Bench, Threads]) ->
    main([Bench, Threads, hd(variants(Bench))]);
main([Bench, Threads, Variant]) ->
    lists:member(Variant, variants(Bench)) orelse main(usage),
    Result =
        try run(Bench, Variant)
        catch Class:Reason:Stack ->
            io:format(standard_error, "~s failed: ~p:~p~n~p~n",
                      [Bench, Class, Reason, Stack]),
            error
        end,
    case Result of
        {N, Seconds, Check, Expected, Extra} ->
            io:format("bench=~s impl=erlang variant=~s threads=~s n=~b seconds=~.6f check=~b~s~n",
                      [Bench, Variant, Threads, N, Seconds, Check, Extra]),
            case Check =:= Expected of
                true ->
                    halt(0);
                false ->
                    io:format(standard_error, "~s: check failed: got ~b, want ~b~n",
                              [Bench, Check, Expected]),
                    halt(1)
            end;
        error ->
            halt(1)
    end;
main(_) ->
    io:format(standard_error,
              "usage: troupe_bench <pingpong|ring|skynet|fanin|ask|idle|big> <threads> [variant]~n"
              "       troupe_bench variants <bench>~n", []),
    halt(2).

%% The idioms an Erlang user picks from, per workload, the default first
%% (bench/run.sh keeps the fastest). bare-int: the replier knows its peer's
%% pid, so messages are bare integers (no heap data to copy); from-tuple:
%% each request carries the sender, `{self(), N}'. plain-call: a request
%% with a fresh reference and a receive on it; gen_server: gen_server:call.
%% hibernate: each idle process waits in erlang:hibernate/3, which shrinks
%% it to its live data; receive: a plain receive.
variants("pingpong") -> ["bare-int", "from-tuple"];
variants("big")      -> ["bare-int", "from-tuple"];
variants("ask")      -> ["plain-call", "gen_server"];
variants("idle")     -> ["hibernate", "receive"];
variants("fanin")    -> ["credit"];
variants(Bench) when Bench =:= "ring"; Bench =:= "skynet" -> ["plain"];
variants(_)          -> main(usage).

run("pingpong", V) -> pingpong(V);
run("ring", _)     -> ring();
run("skynet", _)   -> skynet();
run("fanin", _)    -> fanin();
run("ask", V)      -> ask(V);
run("idle", V)     -> idle(V);
run("big", V)      -> big(V).

now_ns() -> erlang:monotonic_time(nanosecond).

seconds(T0, T1) -> (T1 - T0) / 1.0e9.

%%--------------------------------------------------------------------
%% pingpong: A sends an integer to B, B replies with it + 1.
%%--------------------------------------------------------------------

pingpong(Variant) ->
    Main = self(),
    T0 = now_ns(),
    spawn_pair(Variant, ?PINGPONG_ROUND_TRIPS, Main, fun(Ping) -> Ping() end),
    Final = receive {pingpong_done, V} -> V end,
    T1 = now_ns(),
    {2 * ?PINGPONG_ROUND_TRIPS, seconds(T0, T1), Final, ?PINGPONG_ROUND_TRIPS, ""}.

%% Spawns a pingpong pair: A plays Rounds round trips with B and reports
%% {pingpong_done, V} to Main. A runs Start(Ping), which must call Ping()
%% (big uses it to wait for its go first). Returns A's pid.
spawn_pair("bare-int", Rounds, Main, Start) ->
    spawn(fun() ->
                  Self = self(),
                  B = spawn(fun() -> pong_to(Self) end),
                  Start(fun() -> ping_int(B, 0, Rounds, Main) end)
          end);
spawn_pair("from-tuple", Rounds, Main, Start) ->
    B = spawn(fun pong/0),
    spawn(fun() -> Start(fun() -> ping(B, 0, Rounds, Main) end) end).

%% bare-int: B knows A; both send bare integers.
ping_int(B, Value, 0, Main) ->
    B ! stop,
    Main ! {pingpong_done, Value};
ping_int(B, Value, Left, Main) ->
    B ! Value,
    receive
        Reply -> ping_int(B, Reply, Left - 1, Main)
    end.

pong_to(A) ->
    receive
        stop -> ok;
        Value -> A ! Value + 1, pong_to(A)
    end.

%% from-tuple: A sends {self(), N}; B replies to whoever asked.
ping(B, Value, 0, Main) ->
    B ! stop,
    Main ! {pingpong_done, Value};
ping(B, Value, Left, Main) ->
    B ! {self(), Value},
    receive
        Reply when is_integer(Reply) -> ping(B, Reply, Left - 1, Main)
    end.

pong() ->
    receive
        {From, Value} ->
            From ! Value + 1,
            pong();
        stop ->
            ok
    end.

%%--------------------------------------------------------------------
%% ring: 10,000 processes; a countdown token travels around the ring,
%% decremented on each hop; the process that receives 0 reports.
%%--------------------------------------------------------------------

ring() ->
    Main = self(),
    T0 = now_ns(),
    %% Process 0 is spawned first and learns its successor once the rest
    %% of the ring exists; the others are spawned from the end backwards so
    %% each one knows its successor at spawn time.
    First = spawn(fun() -> receive {next, Next} -> ring_node(0, Next, Main, 0) end end),
    Second = lists:foldl(
               fun(Index, Next) -> spawn(fun() -> ring_node(Index, Next, Main, 0) end) end,
               First,
               lists:seq(?RING_SIZE - 1, 1, -1)),
    First ! {next, Second},
    First ! ?RING_HOPS,
    EndIndex = receive {ring_done, Index} -> Index end,
    T1 = now_ns(),
    %% Stop the ring (not timed): a stop message goes round once, adding up
    %% how many times each process forwarded the token.
    First ! {stop, 0},
    Hops = receive {ring_hops, H} -> H end,
    Expected = ?RING_HOPS rem ?RING_SIZE,
    case EndIndex of
        Expected -> ok;
        _ ->
            io:format(standard_error, "ring: token ended at index ~b, want ~b~n",
                      [EndIndex, Expected]),
            halt(1)
    end,
    {?RING_HOPS, seconds(T0, T1), Hops, ?RING_HOPS, ""}.

ring_node(Index, Next, Main, Forwarded) ->
    receive
        0 ->
            Main ! {ring_done, Index},
            ring_node(Index, Next, Main, Forwarded);
        Token when is_integer(Token) ->
            Next ! Token - 1,
            ring_node(Index, Next, Main, Forwarded + 1);
        {stop, Total} when Index =:= ?RING_SIZE - 1 ->
            Main ! {ring_hops, Total + Forwarded};
        {stop, Total} ->
            Next ! {stop, Total + Forwarded}
    end.

%%--------------------------------------------------------------------
%% skynet: each node above level 6 spawns 10 children; the leaves reply
%% with their ordinal; parents sum and reply.
%%--------------------------------------------------------------------

skynet() ->
    Main = self(),
    T0 = now_ns(),
    spawn(fun() -> skynet_node(Main, 0, ?SKYNET_LEAVES) end),
    Sum = receive S when is_integer(S) -> S end,
    T1 = now_ns(),
    Expected = ?SKYNET_LEAVES * (?SKYNET_LEAVES - 1) div 2,
    {1111111, seconds(T0, T1), Sum, Expected, ""}.

skynet_node(Parent, Num, 1) ->
    Parent ! Num;
skynet_node(Parent, Num, Size) ->
    Self = self(),
    ChildSize = Size div 10,
    spawn_children(Self, Num, ChildSize, 10),
    Parent ! collect(10, 0).

spawn_children(_Self, _Num, _ChildSize, 0) ->
    ok;
spawn_children(Self, Num, ChildSize, K) ->
    ChildNum = Num + (K - 1) * ChildSize,
    spawn(fun() -> skynet_node(Self, ChildNum, ChildSize) end),
    spawn_children(Self, Num, ChildSize, K - 1).

collect(0, Sum) ->
    Sum;
collect(K, Sum) ->
    receive
        V when is_integer(V) -> collect(K - 1, Sum + V)
    end.

%%--------------------------------------------------------------------
%% fanin: 4 producers -> 1 consumer, bounded with credit flow control.
%%
%% Erlang mailboxes are unbounded, so the bound is enforced the usual way:
%% the consumer grants credit. Each producer starts with a window of
%% 1024 / 4 = 256 credits and spends one per message. Data are bare
%% integers, except every 128th, `{ack, From, I}', which asks the consumer
%% for 128 more credits; so the consumer keeps no per-producer state, and
%% a producer's messages not yet consumed never exceed its window: at most
%% 1024 data messages are ever outstanding in the consumer's mailbox.
%%--------------------------------------------------------------------

-define(FANIN_WINDOW, (?FANIN_CAPACITY div ?FANIN_PRODUCERS)).
-define(FANIN_ACK_BATCH, (?FANIN_WINDOW div 2)).

fanin() ->
    Main = self(),
    T0 = now_ns(),
    Consumer = spawn(fun() -> consumer(Main, ?FANIN_PRODUCERS, 0) end),
    [spawn(fun() -> producer(Consumer, 0, ?FANIN_PER_PRODUCER, ?FANIN_WINDOW) end)
     || _ <- lists:seq(1, ?FANIN_PRODUCERS)],
    Sum = receive {fanin_done, S} -> S end,
    T1 = now_ns(),
    Per = ?FANIN_PER_PRODUCER,
    Expected = ?FANIN_PRODUCERS * (Per * (Per - 1) div 2),
    {?FANIN_PRODUCERS * Per, seconds(T0, T1), Sum, Expected, ""}.

producer(Consumer, Limit, Limit, _Credit) ->
    Consumer ! done;
producer(Consumer, I, Limit, 0) ->
    receive
        credit -> producer(Consumer, I, Limit, ?FANIN_ACK_BATCH)
    end;
producer(Consumer, I, Limit, Credit) ->
    case (I + 1) rem ?FANIN_ACK_BATCH of
        0 -> Consumer ! {ack, self(), I};
        _ -> Consumer ! I
    end,
    producer(Consumer, I + 1, Limit, Credit - 1).

consumer(Main, 0, Sum) ->
    Main ! {fanin_done, Sum};
consumer(Main, Producers, Sum) ->
    receive
        V when is_integer(V) ->
            consumer(Main, Producers, Sum + V);
        {ack, From, V} ->
            From ! credit,
            consumer(Main, Producers, Sum + V);
        done ->
            consumer(Main, Producers - 1, Sum)
    end.

%%--------------------------------------------------------------------
%% ask: a server process holding a counter; a client calls it in sequence.
%% plain-call: {increment, self(), Ref} with a fresh reference, and a
%% receive on {Ref, New} (the compiler's reference-receive optimisation
%% skips older messages); gen_server: gen_server:call/2 on a gen_server.
%%--------------------------------------------------------------------

ask(Variant) ->
    Main = self(),
    T0 = now_ns(),
    {Server, Call, Stop} =
        case Variant of
            "plain-call" ->
                S = spawn(fun() -> counter(0) end),
                {S, fun call_increment/1, fun(P) -> P ! stop end};
            "gen_server" ->
                {ok, S} = gen_server:start(?MODULE, 0, []),
                {S, fun(P) -> gen_server:call(P, increment) end, fun gen_server:stop/1}
        end,
    spawn(fun() -> Main ! {ask_done, ask_loop(Server, Call, ?ASK_REQUESTS, 0)} end),
    Last = receive {ask_done, V} -> V end,
    T1 = now_ns(),
    Stop(Server),
    {?ASK_REQUESTS, seconds(T0, T1), Last, ?ASK_REQUESTS, ""}.

ask_loop(_Server, _Call, 0, Last) ->
    Last;
ask_loop(Server, Call, Left, _Last) ->
    ask_loop(Server, Call, Left - 1, Call(Server)).

call_increment(Server) ->
    Ref = make_ref(),
    Server ! {increment, self(), Ref},
    receive
        {Ref, New} -> New
    end.

counter(Counter) ->
    receive
        {increment, From, Ref} ->
            New = Counter + 1,
            From ! {Ref, New},
            counter(New);
        stop ->
            ok
    end.

init(Counter) ->
    {ok, Counter}.

handle_call(increment, _From, Counter) ->
    New = Counter + 1,
    {reply, New, New}.

handle_cast(_Msg, Counter) ->
    {noreply, Counter}.

%%--------------------------------------------------------------------
%% big: 1,000 independent pingpong pairs of 4,000 round trips each, all
%% started together; each ping reports its final value to the main
%% process, which sums them.
%%--------------------------------------------------------------------

big(Variant) ->
    Main = self(),
    T0 = now_ns(),
    WaitForGo = fun(Ping) -> receive go -> Ping() end end,
    Pings = [spawn_pair(Variant, ?BIG_ROUNDS, Main, WaitForGo)
             || _ <- lists:seq(1, ?BIG_PAIRS)],
    %% Every pair exists: start them all.
    lists:foreach(fun(A) -> A ! go end, Pings),
    Sum = big_collect(?BIG_PAIRS, 0),
    T1 = now_ns(),
    {2 * ?BIG_PAIRS * ?BIG_ROUNDS, seconds(T0, T1), Sum, ?BIG_PAIRS * ?BIG_ROUNDS, ""}.

big_collect(0, Sum) ->
    Sum;
big_collect(K, Sum) ->
    receive {pingpong_done, V} -> big_collect(K - 1, Sum + V) end.

%%--------------------------------------------------------------------
%% idle: 1,000,000 processes each waiting for one message. Each counts
%% itself in a shared counter just before it waits; VmRSS is read once all
%% have counted, so every process is measured in its waiting state.
%%--------------------------------------------------------------------

idle(Variant) ->
    Main = self(),
    Waiting = counters:new(1, [write_concurrency]),
    Wait = case Variant of
               "hibernate" -> fun() -> erlang:hibernate(?MODULE, idle_wait, [Main]) end;
               "receive" -> fun() -> idle_wait(Main) end
           end,
    RssBefore = vm_rss(),
    T0 = now_ns(),
    Pids = spawn_idle(fun() -> counters:add(Waiting, 1, 1), Wait() end, ?IDLE_ACTORS, []),
    await_waiting(Waiting),
    RssAfter = vm_rss(),
    lists:foreach(fun(Pid) -> Pid ! stop end, Pids),
    Ended = await_ended(?IDLE_ACTORS, 0),
    T1 = now_ns(),
    PerActor = (RssAfter - RssBefore) div ?IDLE_ACTORS,
    {?IDLE_ACTORS, seconds(T0, T1), Ended, ?IDLE_ACTORS,
     io_lib:format(" bytes_per_actor=~b", [PerActor])}.

spawn_idle(_Fun, 0, Acc) ->
    Acc;
spawn_idle(Fun, K, Acc) ->
    spawn_idle(Fun, K - 1, [spawn(Fun) | Acc]).

idle_wait(Main) ->
    receive stop -> Main ! ended end.

await_waiting(Waiting) ->
    case counters:get(Waiting, 1) of
        ?IDLE_ACTORS -> ok;
        _ -> erlang:yield(), await_waiting(Waiting)
    end.

await_ended(0, Count) ->
    Count;
await_ended(K, Count) ->
    receive ended -> await_ended(K - 1, Count + 1) end.

%% Resident set size of this OS process in bytes, from /proc/self/status.
vm_rss() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    {match, [Kb]} = re:run(Status, "VmRSS:\\s+(\\d+)\\s+kB",
                           [{capture, all_but_first, list}]),
    list_to_integer(Kb) * 1024.
