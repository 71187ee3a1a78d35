package bpf

// Short names for the types bpf2go generates from structs.h and consts.h.
type (
	In6        = ZtgateZtIn6
	DevKey     = ZtgateZtDevKey
	DevRec     = ZtgateZtDevRec
	AddrKey    = ZtgateZtAddrKey
	AddrVal    = ZtgateZtAddrVal
	PrefixKey  = ZtgateZtPrefixKey
	PrefixVal  = ZtgateZtPrefixVal
	RuleKey    = ZtgateZtRuleKey
	RuleVal    = ZtgateZtRuleVal
	Config     = ZtgateZtConfig
	FragKey    = ZtgateZtFragKey
	FragVal    = ZtgateZtFragVal
	Counter    = ZtgateZtCounter
	DevStats   = ZtgateZtDevStats
	EventStats = ZtgateZtEventStats
	Event      = ZtgateZtEvent
	Reason     = ZtgateZtReason
	Verdict    = ZtgateZtVerdict
)
